# Sourced by scripts that need a throw-away dbus-daemon (test-consumers.sh, test-embedded.sh,
# measure-embedded.sh). Same policy as tests/support/test_bus.hpp: dbus-daemon answers nothing
# (not even Hello) unless a rule without send_/receive_ attributes allows it, hence the bare
# eavesdrop rule.
#
#   start_private_bus DIR     starts one listening in DIR; sets bus_address and bus_pid
#   stop_private_bus          kills it (safe to call twice; install it in an EXIT trap)
bus_address=""
bus_pid=""

start_private_bus() {
  local dir=$1 out
  mkdir -p "$dir"
  cat >"$dir/bus.conf" <<CONF
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path=$dir/bus.sock</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
    <allow user="*"/>
  </policy>
</busconfig>
CONF
  out=$(dbus-daemon --config-file="$dir/bus.conf" --fork --nopidfile --print-address=1 --print-pid=1) || return 1
  bus_address=$(sed -n 1p <<<"$out")
  bus_pid=$(sed -n 2p <<<"$out")
}

stop_private_bus() {
  if [[ -n $bus_pid ]]; then
    kill "$bus_pid" 2>/dev/null || true
    bus_pid=""
  fi
}
