# Subscribing clients for the match-rule integration test, run with Debian's /usr/bin/python3
# (python3-dbus and python3-gi).
#
#   subscriber.py ADDRESS SPEC_FILE EMITTER_COUNT
#
# SPEC_FILE has one line per connection: hex-encoded rules separated by spaces ("-" for the empty
# rule; a line may be empty).
# Each connection requests org.mcbus.Test.Sub<i>, adds its rules with AddMatch and records every
# message it receives. Output, one item per line:
#   UNIQUE <i> <unique name>
#   ADD <i> <rule index> OK | ADD <i> <rule index> ERR <D-Bus error name>
#   READY                      (all rules added; the test may start sending)
#   GOT <i> <sender> <serial> <member>
#   DONE                       (every connection has its sentinel from every emitter)
# A connection is finished when it has received a signal with member "Sentinel" from each of the
# EMITTER_COUNT emitters; the bus delivers each emitter's messages to it in order, so by then it has
# everything those emitters sent it before. The script gives up after 120 s (TIMEOUT, exit 1).
import sys

import dbus
import dbus.bus
from dbus.mainloop.glib import DBusGMainLoop
from gi.repository import GLib


def main():
    address, spec_file, emitters = sys.argv[1], sys.argv[2], int(sys.argv[3])
    DBusGMainLoop(set_as_default=True)
    with open(spec_file) as f:
        specs = [line.split() for line in f.read().split("\n")[:-1]]
    conns = []
    got = []
    sentinels = []
    out = []

    def emit(line):
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    for i, spec in enumerate(specs):
        conn = dbus.bus.BusConnection(address)
        conns.append(conn)
        got.append([])
        sentinels.append(set())

        def on_message(_conn, msg, i=i):
            if msg.get_type() != 4:  # signals only; the bus also sends method returns
                return
            sender = msg.get_sender()
            if msg.get_member() == "Sentinel" and msg.get_interface() == "org.mcbus.Test.Control":
                sentinels[i].add(sender)
                if all(len(s) >= emitters for s in sentinels):
                    loop.quit()
                return
            got[i].append("GOT %d %s %d %s" % (i, sender, msg.get_serial(), msg.get_member()))

        conn.add_message_filter(on_message)
        emit("UNIQUE %d %s" % (i, conn.get_unique_name()))
        conn.request_name("org.mcbus.Test.Sub%d" % i, dbus.bus.NAME_FLAG_DO_NOT_QUEUE)
        for n, hexrule in enumerate(spec):
            rule = "" if hexrule == "-" else bytes.fromhex(hexrule).decode("utf-8")
            try:
                conn.add_match_string(rule)
                emit("ADD %d %d OK" % (i, n))
            except dbus.exceptions.DBusException as e:
                emit("ADD %d %d ERR %s" % (i, n, e.get_dbus_name()))

    timed_out = []

    def timeout():
        timed_out.append(True)
        loop.quit()
        return False

    loop = GLib.MainLoop()
    GLib.timeout_add_seconds(120, timeout)
    emit("READY")
    loop.run()
    if timed_out:
        emit("TIMEOUT")
        sys.exit(1)
    for lines in got:
        for line in lines:
            out.append(line)
    for line in out:
        emit(line)
    emit("DONE")


main()
