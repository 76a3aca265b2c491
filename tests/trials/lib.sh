# Shared parts of the trial runners (run.sh, chaos.sh); sourced, not run.
#
# The sourcing script sets, before calling these functions:
#   PROG     its name, for messages ("run.sh")
#   INCLUDE  the include/ directory to build against (build)
#   RUN      the directory of the current run: logs, bus socket and config
#   BUSY_RUN 1 if `start --nice` should run the command at nice 19
# and gets: HERE (tests/trials), ROOT (the tree), BIN (build/trials), the binaries' paths
# SUB PUB CTL FAKE, and the functions below. It should `trap stop_all EXIT`.

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BIN=$ROOT/build/trials
SUB=$BIN/subscriber PUB=$BIN/publisher CTL=$BIN/control FAKE=$BIN/fake_publisher
: "${PROG:=trials}" "${BUSY_RUN:=0}"

# ---- processes: everything started here is in its own process group, killed on exit ----------
PIDS=() BUSY_PIDS=() DAEMON_PID="" BROKER_PID=""
alive() { [ -r "/proc/$1/stat" ] && ! grep -q '^[0-9]* ([^)]*) Z' "/proc/$1/stat" 2>/dev/null; }
kill_group() { kill -"$2" -- "-$1" 2>/dev/null || kill -"$2" "$1" 2>/dev/null || true; }
stop_bus() {
  if [ -n "$DAEMON_PID" ]; then kill -TERM "$DAEMON_PID" 2>/dev/null || true; DAEMON_PID=""; fi
  if [ -n "$BROKER_PID" ]; then  # unshare ignores TERM; KILL makes --kill-child end the namespace
    kill -KILL "$BROKER_PID" 2>/dev/null || true; wait "$BROKER_PID" 2>/dev/null || true; BROKER_PID=""
  fi
}
stop_all() {
  local p
  for p in "${PIDS[@]}" "${BUSY_PIDS[@]}"; do kill_group "$p" KILL; done
  for p in "${PIDS[@]}" "${BUSY_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  PIDS=() BUSY_PIDS=()
  stop_bus
}

# start NAME [--nice] CMD...: starts CMD in the run's directory, output to NAME.out and NAME.err;
# its pid (also its process group) is in $LAST_PID.
start() {
  local name=$1; shift
  local prefix=()
  if [ "$1" = --nice ]; then shift; [ "$BUSY_RUN" = 1 ] && prefix=(nice -n 19); fi
  setsid "${prefix[@]}" "$@" >"$RUN/$name.out" 2>"$RUN/$name.err" </dev/null &
  LAST_PID=$!
  PIDS+=("$LAST_PID")
}
# cpu_of PID: user+system CPU seconds so far, from /proc.
cpu_of() { awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); printf "%.2f", ($12 + $13) / hz }' "/proc/$1/stat" 2>/dev/null || echo "?"; }
# finish PID SECONDS: waits up to SECONDS for PID to exit, then TERM (it prints its summary),
# then KILL. Sets RC (its exit status, 124 if it had to be stopped) and KILLED_CPU.
finish() {
  local pid=$1 deadline=$((SECONDS + $2)) i
  RC=0 KILLED_CPU=""
  while alive "$pid" && [ $SECONDS -lt "$deadline" ]; do sleep 0.05; done
  if alive "$pid"; then
    KILLED_CPU=$(cpu_of "$pid")
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 40); do alive "$pid" || break; sleep 0.05; done
    alive "$pid" && kill_group "$pid" KILL
    wait "$pid" 2>/dev/null || true
    RC=124
  else
    wait "$pid" 2>/dev/null || RC=$?
  fi
}
wait_file() {  # wait_file FILE SECONDS [-s]: until FILE exists (with -s: is not empty)
  local deadline=$((SECONDS + $2)) test=-e
  [ "${3:-}" = -s ] && test=-s
  while [ ! "$test" "$1" ] && [ $SECONDS -lt "$deadline" ]; do sleep 0.02; done
  [ "$test" "$1" ]
}

# ---- build -----------------------------------------------------------------------------------
build() {
  mkdir -p "$BIN"
  local cxx=(g++ -std=c++20 -O2 -Wall -I"$INCLUDE") libs=(-luring -lfmt -lsystemd) p pids=()
  local newest
  newest=$(find "$INCLUDE" -type f -newer "$BIN/.built" 2>/dev/null | head -1 || true)
  [ "$(cat "$BIN/.built" 2>/dev/null)" = "$INCLUDE" ] || newest=changed
  for p in publisher subscriber fake_publisher; do
    if [ ! -x "$BIN/$p" ] || [ "$HERE/$p.cpp" -nt "$BIN/$p" ] || [ ! -e "$BIN/.built" ] || [ -n "$newest" ]; then
      echo "building $p" >&2
      "${cxx[@]}" "$HERE/$p.cpp" -o "$BIN/$p" "${libs[@]}" &
      pids+=($!)
    fi
  done
  if [ ! -x "$BIN/control" ] || [ "$HERE/control.c" -nt "$BIN/control" ]; then
    gcc -std=gnu11 -O2 -Wall "$HERE/control.c" -o "$BIN/control" -lsystemd
  fi
  for p in "${pids[@]}"; do wait "$p" || { echo "$PROG: build failed" >&2; exit 1; }; done
  echo "$INCLUDE" >"$BIN/.built"
}
check_binaries() {
  local p
  for p in publisher subscriber fake_publisher control; do
    [ -x "$BIN/$p" ] || { echo "$PROG: $BIN/$p missing (run without --no-build)" >&2; exit 1; }
  done
}

# ---- buses -----------------------------------------------------------------------------------
# check_broker: sets BROKER_OK (1 or 0) and, if 0, BROKER_WHY.
check_broker() {
  BROKER_OK=1 BROKER_WHY=""
  if ! command -v dbus-broker-launch >/dev/null; then
    BROKER_OK=0 BROKER_WHY="no dbus-broker-launch"
  elif ! unshare --mount --propagation private --fork --pid true 2>/dev/null; then
    BROKER_WHY=$({ unshare --mount --propagation private --fork --pid true 2>&1 || true; } | head -1)
    BROKER_OK=0 BROKER_WHY="unshare --mount --pid is not permitted${BROKER_WHY:+: $BROKER_WHY}"
  fi
}

write_config() {  # write_config FILE [LISTEN]
  {
    echo '<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"'
    echo ' "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">'
    echo '<busconfig>'
    echo '  <type>session</type>'
    [ -n "${2:-}" ] && echo "  <listen>$2</listen>"
    echo '  <auth>EXTERNAL</auth>'
    echo '  <policy context="default"><allow send_destination="*" eavesdrop="true"/><allow eavesdrop="true"/><allow own="*"/></policy>'
    echo '  <limit name="max_match_rules_per_connection">100000</limit>'
    echo '  <limit name="max_incoming_bytes">1000000000</limit>'
    echo '  <limit name="max_outgoing_bytes">1000000000</limit>'
    echo '  <limit name="max_message_size">134217728</limit>'
    echo '  <limit name="max_replies_per_connection">100000</limit>'
    echo '</busconfig>'
  } >"$1"
}

# start_bus daemon|broker: sets DBUS_SESSION_BUS_ADDRESS, or returns 1 with BUS_PROBLEM set.
start_bus() {
  local sock=$RUN/bus.sock i
  BUS_PROBLEM=""
  if [ "$1" = daemon ]; then
    write_config "$RUN/bus.conf" "unix:path=$sock"
    if ! timeout 10 dbus-daemon --config-file="$RUN/bus.conf" --fork --nopidfile --print-address=1 --print-pid=1 \
      >"$RUN/daemon.out" 2>"$RUN/daemon.err"; then
      BUS_PROBLEM="dbus-daemon did not start: $(head -c 300 "$RUN/daemon.err" | tr -s '\n\t ' ' ')"; return 1
    fi
    DAEMON_PID=$(sed -n 2p "$RUN/daemon.out")
    export DBUS_SESSION_BUS_ADDRESS=$(sed -n 1p "$RUN/daemon.out")
  else
    write_config "$RUN/bus.conf"
    export DBUS_SESSION_BUS_ADDRESS=unix:path=$sock
    setsid unshare --mount --propagation private --fork --pid --kill-child bash -c '
      mount -t tmpfs tmpfs /run/systemd 2>/dev/null || { mkdir -p /run/systemd; mount -t tmpfs tmpfs /run/systemd; }
      # dbus-broker-launch needs a machine id (tests/support/test_bus.hpp says why).
      if [ ! -s /etc/machine-id ]; then
        mkdir -p "$3/etc"; tr -d - </proc/sys/kernel/random/uuid >"$3/etc/machine-id"
        if [ -e /etc/machine-id ]; then mount --bind "$3/etc/machine-id" /etc/machine-id
        else mount -t overlay overlay -o lowerdir="$3/etc":/etc /etc; fi
      fi
      mkdir -p /run/systemd/journal
      /usr/bin/python3 -c "import socket,time; s=socket.socket(socket.AF_UNIX,socket.SOCK_DGRAM); s.bind(\"/run/systemd/journal/socket\"); time.sleep(1e9)" &
      for i in $(seq 500); do [ -S /run/systemd/journal/socket ] && break; sleep 0.01; done
      exec systemd-socket-activate -l "$1" -E DBUS_SESSION_BUS_ADDRESS=unix:path="$1" dbus-broker-launch --scope user --config-file "$2"' \
      broker "$sock" "$RUN/bus.conf" "$RUN" >"$RUN/broker.log" 2>&1 </dev/null &
    BROKER_PID=$!
  fi
  for i in $(seq 100); do  # up to 10 s for the bus to answer
    if [ -S "$sock" ] && timeout 2 dbus-send --bus="$DBUS_SESSION_BUS_ADDRESS" --print-reply --dest=org.freedesktop.DBus \
      /org/freedesktop/DBus org.freedesktop.DBus.GetId >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  BUS_PROBLEM="$1 did not answer within 10 s: $(tail -c 300 "$RUN/broker.log" 2>/dev/null | tr -s '\n\t ' ' ')"
  return 1
}

start_busy() {
  local i
  for i in 1 2; do
    setsid nice -n 0 bash -c 'while :; do :; done' </dev/null >/dev/null 2>&1 &
    BUSY_PIDS+=($!)
  done
}

# ---- judging -----------------------------------------------------------------------------------
# seqstats FILE -> "lines distinct dups inversions"
seqstats() {
  awk '{ n++; if (seen[$1]++) d++; if (n > 1 && $1 + 0 < prev) inv++; prev = $1 + 0 }
       END { printf "%d %d %d %d\n", n, n - d, d, inv }' "$1" 2>/dev/null || echo "0 0 0 0"
}
summary_field() {  # summary_field NAME.out KEY -> the number after KEY in its summary line
  { grep -o "$2 [0-9.]*" "$RUN/$1.out" 2>/dev/null || true; } | tail -1 | awk '{print $NF}'
}
# judge NAME [CONTROL]: compares NAME.log with CONTROL.log (default control); appends to DETAIL
# and REASONS.
judge() {
  local name=$1 control=${2:-control} n distinct dups inv y missing
  read -r n distinct dups inv < <(seqstats "$RUN/$name.log")
  y=$(wc -l <"$RUN/$control.log" 2>/dev/null || echo 0)
  DETAIL+="${DETAIL:+; }$name got $distinct of $y, dups $dups, inversions $inv"
  if ! cmp -s "$RUN/$name.log" "$RUN/$control.log"; then
    local nmiss first extra
    missing=$(comm -23 <(sort -u "$RUN/$control.log") <(sort -u "$RUN/$name.log" 2>/dev/null) | sort -n || true)
    nmiss=$(grep -c . <<<"$missing" || true)
    first=${missing%%$'\n'*}
    extra=$({ comm -13 <(sort -u "$RUN/$control.log") <(sort -u "$RUN/$name.log" 2>/dev/null) || true; } | grep -c . || true)
    REASONS+="${REASONS:+; }$name differs from $control (missing $nmiss${first:+ from seq $first}, extra $extra, dups $dups, inversions $inv)"
  fi
}
control_complete() {  # control_complete EXPECTED [CONTROL]
  local y control=${2:-control}
  y=$(wc -l <"$RUN/$control.log" 2>/dev/null || echo 0)
  [ "$y" -eq "$1" ] || REASONS+="${REASONS:+; }$control got $y of $1 (bus copies missing or late)"
}
check_rc() {  # check_rc NAME RC [KILLED_CPU]
  if [ "$2" = 124 ]; then REASONS+="${REASONS:+; }$1 did not finish in time (stopped${3:+, cpu ${3} s})"
  elif [ "$2" -gt 128 ]; then REASONS+="${REASONS:+; }$1 killed by signal $(($2 - 128))"
  elif [ "$2" != 0 ]; then REASONS+="${REASONS:+; }$1 exited with status $2: $(tail -c 200 "$RUN/$1.err" 2>/dev/null | tr -s '\n\t ' ' ')"; fi
}
