#!/usr/bin/python3
# Trial plain service (case 6): an ordinary D-Bus service written with python3-dbus that is NOT
# a multicast publisher. It owns NAME and logs every method call it receives ("interface.member
# from sender", one a line) to --calls. Once the file --go exists it stops answering the bus for
# --busy-ms (it sleeps inside a handler, as a busy service does), then answers what queued up,
# and 500 ms later emits org.example.Trial1.Tick(s "tick", t seq, t mono_ns) --count times from
# /org/example/Trial, and exits 1.5 s after the last one.
#
#   plain_service.py NAME --calls=FILE --ready=FILE --go=FILE [--count=N] [--busy-ms=MS]
# Connects to DBUS_SESSION_BUS_ADDRESS. Needs /usr/bin/python3 with python3-dbus and gi.
import os
import sys
import time

import dbus
import dbus.lowlevel
import dbus.mainloop.glib
from gi.repository import GLib

opts = {"count": "2000", "busy-ms": "3000"}
name = None
for a in sys.argv[1:]:
    if a.startswith("--") and "=" in a:
        k, v = a[2:].split("=", 1)
        opts[k] = v
    elif name is None:
        name = a
    else:
        sys.exit("usage: plain_service.py NAME --calls=FILE --ready=FILE --go=FILE [--count=N] [--busy-ms=MS]")
count, busy_ms = int(opts["count"]), int(opts["busy-ms"])

dbus.mainloop.glib.DBusGMainLoop(set_as_default=True)
bus = dbus.bus.BusConnection(os.environ["DBUS_SESSION_BUS_ADDRESS"])
if bus.request_name(name, dbus.bus.NAME_FLAG_DO_NOT_QUEUE) != dbus.bus.REQUEST_NAME_REPLY_PRIMARY_OWNER:
    sys.exit("plain_service: cannot own " + name)
calls = open(opts["calls"], "w", buffering=1)


def log_calls(conn, msg):
    if msg.get_type() == dbus.lowlevel.MESSAGE_TYPE_METHOD_CALL:
        calls.write("%s.%s from %s\n" % (msg.get_interface(), msg.get_member(), msg.get_sender()))
    return dbus.lowlevel.HANDLER_RESULT_NOT_YET_HANDLED  # libdbus answers UnknownMethod


bus.add_message_filter(log_calls)
loop = GLib.MainLoop()


def emit_all():
    for seq in range(count):
        m = dbus.lowlevel.SignalMessage("/org/example/Trial", "org.example.Trial1", "Tick")
        m.append("tick", dbus.UInt64(seq), dbus.UInt64(time.monotonic_ns()), signature="stt")
        bus.send_message(m)
        if seq % 100 == 99:
            bus.flush()
    bus.flush()
    print("plain_service: emitted %d" % count, flush=True)
    GLib.timeout_add(1500, loop.quit)
    return False


def wait_for_go():
    if not os.path.exists(opts["go"]):
        return True
    time.sleep(busy_ms / 1000.0)  # busy: the bus is not read meanwhile
    GLib.timeout_add(500, emit_all)
    return False


GLib.timeout_add(10, wait_for_go)
open(opts["ready"], "w").close()
loop.run()
