#!/usr/bin/python3
# A python3-dbus service for the integration tests: one method per case, each returning fixed values
# of one signature, so that mcbus-call and busctl can be compared on replies of every D-Bus type,
# including values busctl cannot send itself. Fail* methods return D-Bus errors; EchoArgs replies
# with its arguments, whatever their signature.
#
#   types_service.py ADDRESS
#
# Prints "CASE NAME" for every method, then "READY UNIQUE_NAME"; exits 0 on SIGTERM.
import os
import signal
import sys

import dbus
import dbus.mainloop.glib
import dbus.service
from gi.repository import GLib

NAME = "org.mcbus.TestTypes"
PATH = "/org/mcbus/TestTypes"
IFACE = "org.mcbus.TestTypes1"

B, I16, U16, I32, U32 = dbus.Byte, dbus.Int16, dbus.UInt16, dbus.Int32, dbus.UInt32
I64, U64, D, S, O, G = dbus.Int64, dbus.UInt64, dbus.Double, dbus.String, dbus.ObjectPath, dbus.Signature


def arr(items, sig, variant_level=0):
    return dbus.Array(items, signature=sig, variant_level=variant_level)


def dct(items, sig, variant_level=0):
    return dbus.Dictionary(items, signature=sig, variant_level=variant_level)


def st(items, sig, variant_level=0):
    return dbus.Struct(items, signature=sig, variant_level=variant_level)


TRICKY_STRINGS = [
    "",
    "plain",
    'double "quotes"',
    "single 'quotes'",
    "back\\slash \\n not a newline",
    "tab\there",
    "new\nline",
    "carriage\rreturn",
    "bell\a backspace\b formfeed\f vtab\v",
    "controls \x01\x02\x1b\x1f and delete \x7f",
    "C1 control \u0085 and no-break\u00a0space",
    "h\u00e9llo w\u00f6rld \u20ac \u2603 \U0001d11e \u4e2d\u6587",
    "printf %s %d %n %% {}",
    "  leading and trailing  ",
    "?" * 300,
]

CASES = [
    # basic types at their limits
    ("Bytes", "yyyy", [B(0), B(1), B(127), B(255)]),
    ("Booleans", "bb", [True, False]),
    ("Int16", "nnn", [I16(-32768), I16(0), I16(32767)]),
    ("UInt16", "qq", [U16(0), U16(65535)]),
    ("Int32", "iii", [I32(-2147483648), I32(-1), I32(2147483647)]),
    ("UInt32", "uu", [U32(0), U32(4294967295)]),
    ("Int64", "xxx", [I64(-9223372036854775808), I64(0), I64(9223372036854775807)]),
    ("UInt64", "tt", [U64(0), U64(18446744073709551615)]),
    ("DoublesSimple", "dddd", [D(0.0), D(1.0), D(-2.5), D(0.1)]),
    ("DoublesZeroes", "dd", [D(0.0), D(-0.0)]),
    ("DoublesTiny", "ddd", [D(1e-7), D(5e-324), D(2.2250738585072014e-308)]),
    ("DoublesHuge", "ddd", [D(1e100), D(1.7976931348623157e308), D(123456789.0)]),
    ("DoublesRounding", "dddd", [D(1.0 / 3.0), D(100000.0), D(1000000.0), D(0.0001)]),
    ("DoublesNonFinite", "ddd", [D(float("inf")), D(float("-inf")), D(float("nan"))]),
    ("ObjectPaths", "ooo", [O("/"), O("/org/mcbus/x_1"), O("/A/b9/_")]),
    ("Signatures", "ggg", [G(""), G("a{sv}(ii)v"), G("aaaai")]),
    ("Variant", "v", [dbus.Int32(7, variant_level=1)]),
    ("VariantInVariant", "v", [dbus.String("deep", variant_level=3)]),
    # arrays
    ("ByteArray", "ay", [dbus.ByteArray(b"\x00\x01ABC\x7f\x80\xff")]),
    ("ByteArrayEmpty", "ay", [dbus.ByteArray(b"")]),
    ("ByteArrayText", "ay", [dbus.ByteArray(b"printable text\x00")]),
    ("ByteArrays", "aay", [arr([dbus.ByteArray(b"\x01\x02"), dbus.ByteArray(b""), dbus.ByteArray(b"z")], "ay")]),
    ("IntArray", "ai", [arr([I32(n) for n in range(-150, 150)], "i")]),
    ("EmptyArrays", "asaiaa{sv}", [arr([], "s"), arr([], "i"), arr([], "a{sv}")]),
    ("NestedArrays", "aai", [arr([arr([1, 2], "i"), arr([], "i"), arr([3], "i")], "ai")]),
    ("DeepArrays", "aaas", [arr([arr([arr(["x"], "s")], "as")], "aas")]),
    ("DoubleArray", "ad", [arr([D(0.5), D(-0.0), D(float("nan")), D(1e300)], "d")]),
    ("BoolArray", "ab", [arr([True, False, True], "b")]),
    ("VariantArray", "av", [arr([I32(1), S("two"), arr([B(3)], "y"), st((U16(4), D(5.5)), "qd")], "v")]),
    # structs
    ("Struct", "(isb)", [st((I32(-1), S("s"), True), "isb")]),
    ("NestedStruct", "((ii)(s(d)))", [st((st((1, 2), "ii"), st(("a", st((D(0.25),), "d")), "s(d)")), "(ii)(s(d))")]),
    ("StructArray", "a(sy)", [arr([st(("a", B(1)), "sy"), st(("b", B(2)), "sy")], "(sy)")]),
    ("StructWithEmpty", "(asi)", [st((arr([], "s"), I32(9)), "asi")]),
    # dicts
    ("DictSV", "a{sv}", [dct({"int": I32(1), "str": S("v"), "nested": dct({"k": U64(2)}, "sv"), "list": arr(["a"], "s")}, "sv")]),
    ("DictSS", "a{ss}", [dct({"key": "value", "quote\"d": "tab\tbed", "": "empty key"}, "ss")]),
    ("DictIX", "a{ix}", [dct({I32(-1): I64(-9223372036854775808), I32(0): I64(0), I32(2147483647): I64(1)}, "ix")]),
    ("DictEmpty", "a{sv}", [dct({}, "sv")]),
    ("DictOfDicts", "a{sa{sv}}", [dct({"outer": dct({"inner": dbus.Boolean(True, variant_level=2)}, "sv")}, "sa{sv}")]),
    ("DictByteKeys", "a{yd}", [dct({B(0): D(1.5), B(255): D(-1e-5)}, "yd")]),
    # variants holding containers, and variants in variants
    ("VariantStruct", "v", [st((I32(1), S("x")), "is", variant_level=1)]),
    ("VariantDict", "v", [dct({"a": I32(1)}, "sv", variant_level=1)]),
    ("VariantOfVariantArray", "v", [arr([I32(1), I32(2)], "i", variant_level=2)]),
    ("VariantByteArray", "v", [dbus.ByteArray(b"AB", variant_level=1)]),
    # several values at the top level
    ("Mixed", "sxdbvo", [S("s"), I64(-5), D(2.5), False, U32(3, variant_level=1), O("/p")]),
]

CASES += [("String%d" % i, "s", [S(s)]) for i, s in enumerate(TRICKY_STRINGS)]
CASES += [("StringArray", "as", [arr(TRICKY_STRINGS, "s")])]


def make_method(name, sig, values):
    def method(self):
        return values[0] if len(values) == 1 else tuple(values)

    method.__name__ = name
    return dbus.service.method(IFACE, in_signature="", out_signature=sig)(method)


def fail(self):
    raise dbus.exceptions.DBusException('it failed: "quoted" \\ tab\t \u00fcnicode', name="org.mcbus.Test.Error.Custom")


def fail_python(self):
    raise ValueError("a plain Python exception")


# Replies with exactly the arguments of the call, whatever their signature. dbus.service cannot
# declare a method of any signature, so this is a message filter that answers before it.
def echo_args_filter(connection, msg):
    if not isinstance(msg, dbus.lowlevel.MethodCallMessage) or msg.get_member() != "EchoArgs":
        return dbus.lowlevel.HANDLER_RESULT_NOT_YET_HANDLED
    reply = dbus.lowlevel.MethodReturnMessage(msg)
    reply.append(signature=msg.get_signature(), *msg.get_args_list(byte_arrays=True))
    connection.send_message(reply)
    return dbus.lowlevel.HANDLER_RESULT_HANDLED


def unix_fd(self):
    return dbus.types.UnixFd(os.open("/dev/null", os.O_RDONLY))


def main():
    dbus.mainloop.glib.DBusGMainLoop(set_as_default=True)
    bus = dbus.bus.BusConnection(sys.argv[1])
    methods = {name: make_method(name, sig, values) for name, sig, values in CASES}
    fail.__name__, fail_python.__name__, unix_fd.__name__ = "Fail", "FailPython", "UnixFd"
    methods["Fail"] = dbus.service.method(IFACE, in_signature="", out_signature="")(fail)
    methods["FailPython"] = dbus.service.method(IFACE, in_signature="", out_signature="")(fail_python)
    methods["UnixFd"] = dbus.service.method(IFACE, in_signature="", out_signature="h")(unix_fd)
    bus.add_message_filter(echo_args_filter)
    # The metaclass collects the methods when the class is made, so the class is made here.
    cls = dbus.service.InterfaceType("TestTypes", (dbus.service.Object,), methods)
    obj = cls(bus, PATH)  # noqa: F841 (kept alive by the bus)
    # The name is released when this object is collected: keep it until the end.
    bus_name = dbus.service.BusName(NAME, bus, do_not_queue=True)  # noqa: F841

    loop = GLib.MainLoop()
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGTERM, loop.quit)
    for case, _, _ in CASES:
        print("CASE " + case)
    print("READY " + bus.get_unique_name(), flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
