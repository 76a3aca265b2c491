#!/usr/bin/python3
# A python3-dbus client of the echo-service for the integration tests. It calls every method, reads
# the Count property (Get and GetAll), introspects, and receives the Echoed and PropertiesChanged
# signals that its Echo call causes. It prints one tab-separated line per result for the C++ test
# to check, and exits 0 once both signals came, or 1 at the deadline.
#
#   python_peer.py ADDRESS FILE TEXT     (FILE's first line is read back through ReadFd)
import sys
import xml.etree.ElementTree as ET

import dbus
import dbus.mainloop.glib
from gi.repository import GLib

NAME, PATH, IFACE = "org.mcbus.Echo", "/org/mcbus/Echo", "org.mcbus.Echo1"
PROPS = "org.freedesktop.DBus.Properties"


def out(*fields):
    print("\t".join(str(f) for f in fields), flush=True)


def main():
    address, fd_file, text = sys.argv[1:4]
    dbus.mainloop.glib.DBusGMainLoop(set_as_default=True)
    bus = dbus.bus.BusConnection(address)
    obj = bus.get_object(NAME, PATH, introspect=False)
    echo = dbus.Interface(obj, IFACE)
    props = dbus.Interface(obj, PROPS)

    signals = []
    loop = GLib.MainLoop()

    def on_echoed(value, sender=None):
        signals.append(("Echoed", str(value), sender))
        if len(signals) == 2:
            loop.quit()

    def on_changed(iface, changed, invalidated, sender=None):
        counts = ",".join("%s=%s:%d" % (k, type(v).__name__, v) for k, v in sorted(changed.items()))
        signals.append(("PropertiesChanged", "%s|%s|%s" % (iface, counts, ",".join(invalidated)), sender))
        if len(signals) == 2:
            loop.quit()

    bus.add_signal_receiver(on_echoed, "Echoed", IFACE, NAME, PATH, sender_keyword="sender")
    bus.add_signal_receiver(on_changed, "PropertiesChanged", PROPS, NAME, PATH, sender_keyword="sender")
    # AddMatch went out without waiting; a round trip to the bus makes sure it has been applied.
    bus.call_blocking("org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "GetId", "", ())

    before = props.Get(IFACE, "Count")
    out("CountBefore", type(before).__name__, int(before))
    reply = echo.Echo(text)
    out("Echo", type(reply).__name__, reply)

    for value in [dbus.Int32(-7), dbus.String("s\tx"), dbus.Array([dbus.Byte(1), dbus.Byte(255)], signature="y"),
                  dbus.Struct((dbus.Int64(1), dbus.Double(2.5)), signature="xd"),
                  dbus.Dictionary({"k": dbus.UInt16(9)}, signature="sv"), dbus.Boolean(True, variant_level=2)]:
        got = echo.EchoAny(value, signature="v")
        same = got == value and type(got) is type(value) and got.variant_level == max(value.variant_level, 1)
        out("EchoAny", type(value).__name__, "same" if same else "differs: %r" % (got,))

    total = echo.Sum(dbus.Array([1, 2, 3, 2147483647], signature="i"))
    out("Sum", type(total).__name__, int(total))

    with open(fd_file) as f:
        line = echo.ReadFd(dbus.types.UnixFd(f))
    out("ReadFd", type(line).__name__, line)

    after = props.Get(IFACE, "Count")
    out("CountAfter", type(after).__name__, int(after))
    everything = props.GetAll(IFACE)
    out("GetAll", ",".join("%s=%s:%d" % (k, type(v).__name__, v) for k, v in sorted(everything.items())))

    root = ET.fromstring(obj.Introspect(dbus_interface="org.freedesktop.DBus.Introspectable"))
    for iface in root.findall("interface"):
        if iface.get("name") != IFACE:
            continue
        for m in iface.findall("method"):
            ins = "".join(a.get("type") for a in m.findall("arg") if a.get("direction", "in") == "in")
            outs = "".join(a.get("type") for a in m.findall("arg") if a.get("direction") == "out")
            out("Introspect", "method", m.get("name"), ins, outs)
        for s in iface.findall("signal"):
            out("Introspect", "signal", s.get("name"), "".join(a.get("type") for a in s.findall("arg")))
        for p in iface.findall("property"):
            out("Introspect", "property", p.get("name"), p.get("type"), p.get("access"))

    def give_up():
        loop.quit()
        return False

    GLib.timeout_add_seconds(20, give_up)
    if len(signals) < 2:
        loop.run()
    for name, value, sender in signals:
        out("Signal", name, value, sender)
    return 0 if len(signals) == 2 else 1


if __name__ == "__main__":
    sys.exit(main())
