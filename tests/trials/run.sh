#!/usr/bin/env bash
# Regression trials for the multicast fast path, as a user would run them.
#
# Each run starts a private bus (dbus-daemon or dbus-broker), a publisher, one or more mcbus
# subscribers, and a bus-only control subscriber written with sd-bus (control.c) using the same
# match rule. Each mcbus subscriber's log (one seq per line) must be IDENTICAL to the control's:
# same seqs, same order, no duplicates, nothing missing. Scenarios:
#   1  foreign poll() loop (docs/event-loops.md); rule names the publisher's unique name
#   2  rule names a well-known name; the publisher starts as soon as one member joined
#   3  overload: 100000 Ticks in bursts of 1000 under publisher::batch, three subscribers and the
#      control at nice 19 while two busy loops run (--busy is forced)
#   4  subscribers (--via=bus and --via=auto) started before the publisher exists
#   5  a member that never reads; the control must get every Tick within 1 s of its emission,
#      and a normal mcbus subscriber alongside must equal the control
#   6  a plain python3-dbus service that is no publisher and is busy for 3 s: subscribe() must
#      return in under 100 ms, the service must see no org.mcbus.Multicast1.Join, logs equal
#   7  a fake publisher (fake_publisher.cpp), modes a-e: no duplicate or out-of-order seq, no
#      crash, under 2 s of CPU; in mode a nothing taken from the stream socket (a member must
#      refuse it); logs equal in modes a and e (in e the group closes before the first Tick),
#      and in b-d when the subscriber took nothing from the group
#
#   tests/trials/run.sh [--case 1..7|all] [--reps N] [--bus daemon|broker|both]
#                       [--transport uring|poll|both] [--loop own|poll|both] [--busy]
#                       [--count N] [--include DIR] [--no-build] [--keep]
#
# Defaults: --case all --reps 1 --bus both --transport both --loop own. --count overrides case 3's
# 100000. --include builds against another copy of include/ (default: this tree's, as it is now).
# Case 1 always uses the poll loop. Binaries go to build/trials/, each run's logs to
# build/trials/runs/<run>/ (removed after a PASS unless --keep). Prints one line per run and
# "N passed, M failed" at the end; exits 1 if anything failed.
set -euo pipefail

PROG=run.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"  # HERE ROOT BIN, processes, build, buses, judging
RUNS=$BIN/runs

CASES=all REPS=1 BUSES=both TRANSPORTS=both LOOPS=own BUSY=0 COUNT3=100000 BUILD=1 KEEP=0 INCLUDE=$ROOT/include
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 2; }
while [ $# -gt 0 ]; do
  case $1 in
    --case) CASES=$2; shift ;;
    --reps) REPS=$2; shift ;;
    --bus) BUSES=$2; shift ;;
    --transport) TRANSPORTS=$2; shift ;;
    --loop) LOOPS=$2; shift ;;
    --count) COUNT3=$2; shift ;;
    --include) INCLUDE=$(cd "$2" && pwd); shift ;;
    --busy) BUSY=1 ;;
    --no-build) BUILD=0 ;;
    --keep) KEEP=1 ;;
    -h|--help) usage ;;
    *) echo "run.sh: unknown option $1" >&2; usage ;;
  esac
  shift
done
both() { if [ "$1" = both ]; then echo "$2 $3"; else echo "$1"; fi; }
[ "$CASES" = all ] && CASES="1 2 3 4 5 6 7"
BUSES=$(both "$BUSES" daemon broker)
TRANSPORTS=$(both "$TRANSPORTS" uring poll)
LOOPS=$(both "$LOOPS" own poll)

trap 'stop_all' EXIT
trap 'exit 130' INT TERM

# ---- build -----------------------------------------------------------------------------------
[ "$BUILD" = 1 ] && build
check_binaries

# ---- buses -----------------------------------------------------------------------------------
BROKER_OK=1
if [[ " $BUSES " == *" broker "* ]]; then
  check_broker
  [ "$BROKER_OK" = 1 ] || echo "run.sh: dbus-broker runs skipped ($BROKER_WHY)"
fi

# ---- scenarios ---------------------------------------------------------------------------------
rule_for() { echo "type='signal',sender='$1',interface='org.example.Trial1',member='Tick'"; }

# A subscriber: sub NAME RULE [subscriber options...]
sub() {
  local name=$1 rule=$2; shift 2
  start "$name" --nice "$SUB" "$rule" --out="$RUN/$name.log" --ready="$RUN/$name.ready" "$@"
  wait_file "$RUN/$name.ready" 15 || REASONS+="${REASONS:+; }$name did not subscribe within 15 s"
}
ctl() {  # ctl RULE [control options...]
  local rule=$1; shift
  start control --nice "$CTL" "$rule" --out="$RUN/control.log" --ready="$RUN/control.ready" "$@"
  CTL_PID=$LAST_PID
  wait_file "$RUN/control.ready" 15 || REASONS+="${REASONS:+; }control did not subscribe within 15 s"
}

case_1() {  # foreign poll() loop, unique-name sender
  local n=2000 rule
  start publisher "$PUB" org.example.Trial --count=$n --wait-members=1 --ready="$RUN/publisher.ready"
  local pub=$LAST_PID
  wait_file "$RUN/publisher.ready" 15 -s || { REASONS="publisher did not start"; return; }
  sleep 0.05  # the line is complete
  rule=$(rule_for "$(head -1 "$RUN/publisher.ready")")
  ctl "$rule" --expect=$n --idle-exit=2000 --max-time=60000
  sub subscriber "$rule" --loop=poll --expect=$n --idle-exit=2000 --max-time=60000
  local s=$LAST_PID
  finish "$pub" 40; check_rc publisher $RC
  finish "$CTL_PID" 5; check_rc control $RC
  finish "$s" 3; check_rc subscriber $RC "$KILLED_CPU"
  control_complete $n; judge subscriber
}

case_2() {  # well-known name, publisher starts as soon as one member joined
  local n=2000 rule
  rule=$(rule_for org.example.Pub)
  ctl "$rule" --expect=$n --idle-exit=2000 --max-time=60000
  start publisher "$PUB" org.example.Pub --count=$n --wait-members=1 --ready="$RUN/publisher.ready"
  local pub=$LAST_PID
  wait_file "$RUN/publisher.ready" 15 || { REASONS="publisher did not start"; return; }
  sub subscriber "$rule" --loop="$LOOP" --expect=$n --idle-exit=2000 --max-time=60000
  local s=$LAST_PID
  finish "$pub" 40; check_rc publisher $RC
  finish "$CTL_PID" 5; check_rc control $RC
  finish "$s" 3; check_rc subscriber $RC "$KILLED_CPU"
  control_complete $n; judge subscriber
}

case_3() {  # overload: bursts under publisher::batch, three niced subscribers, two busy loops
  local n=$COUNT3 rule i pids=()
  rule=$(rule_for org.example.Trial)
  ctl "$rule" --expect="$n" --idle-exit=5000 --max-time=240000
  start publisher "$PUB" org.example.Trial --count="$n" --burst=1000 --wait-members=3 --ready="$RUN/publisher.ready"
  local pub=$LAST_PID
  wait_file "$RUN/publisher.ready" 15 || { REASONS="publisher did not start"; return; }
  for i in 1 2 3; do
    sub "sub$i" "$rule" --loop="$LOOP" --expect="$n" --idle-exit=5000 --max-time=240000
    pids+=("$LAST_PID")
  done
  finish "$pub" 240; check_rc publisher $RC
  finish "$CTL_PID" 30; check_rc control $RC
  for i in 1 2 3; do finish "${pids[$((i - 1))]}" 10; check_rc "sub$i" $RC "$KILLED_CPU"; done
  control_complete "$n"
  for i in 1 2 3; do judge "sub$i"; done
}

case_4() {  # subscribers first, publisher later
  local n=2000 rule a b
  rule=$(rule_for org.example.Trial)
  ctl "$rule" --expect=$n --idle-exit=2000 --max-time=60000
  sub bus-sub "$rule" --via=bus --loop="$LOOP" --expect=$n --idle-exit=2000 --max-time=60000; a=$LAST_PID
  sub auto-sub "$rule" --via=auto --loop="$LOOP" --expect=$n --idle-exit=2000 --max-time=60000; b=$LAST_PID
  start publisher "$PUB" org.example.Trial --count=$n --wait-members=0 --start-delay=200
  local pub=$LAST_PID
  finish "$pub" 40; check_rc publisher $RC
  finish "$CTL_PID" 5; check_rc control $RC
  finish "$a" 3; check_rc bus-sub $RC "$KILLED_CPU"
  finish "$b" 3; check_rc auto-sub $RC "$KILLED_CPU"
  control_complete $n; judge bus-sub; judge auto-sub
  local m
  m=$(summary_field bus-sub "via multicast")
  [ "${m:-0}" = 0 ] || REASONS+="${REASONS:+; }the --via=bus subscriber received $m via multicast"
  NOTES+=" auto-sub via multicast: $(summary_field auto-sub "via multicast")."
}

case_5() {  # a member that never reads must not delay the bus
  local n=1500 rule stuck reader maxlat late
  rule=$(rule_for org.example.Trial)
  # No early idle exit: bus copies held back by the stuck member must show up as late, not lost.
  ctl "$rule" --latency="$RUN/latency.log" --expect=$n --idle-exit=10000 --max-time=60000
  start publisher "$PUB" org.example.Trial --count=$n --rate=100 --wait-members=2 --ready="$RUN/publisher.ready"
  local pub=$LAST_PID
  wait_file "$RUN/publisher.ready" 15 || { REASONS="publisher did not start"; return; }
  sub stuck "$rule" --never-read --max-time=40000; stuck=$LAST_PID
  sub reader "$rule" --loop="$LOOP" --expect=$n --idle-exit=3000 --max-time=60000; reader=$LAST_PID
  finish "$pub" 45; check_rc publisher $RC
  finish "$CTL_PID" 5; check_rc control $RC
  finish "$reader" 3; check_rc reader $RC "$KILLED_CPU"
  finish "$stuck" 0
  control_complete $n; judge reader
  maxlat=$(awk 'BEGIN { m = 0 } $2 > m { m = $2 } END { printf "%.0f", m / 1000 }' "$RUN/latency.log" 2>/dev/null || echo "?")
  late=$(awk '$2 > 1000000' "$RUN/latency.log" 2>/dev/null | wc -l)
  NOTES+=" control max latency ${maxlat} ms."
  [ "$late" = 0 ] || REASONS+="${REASONS:+; }$late control signals later than 1000 ms (max ${maxlat} ms)"
}

case_6() {  # a plain (non-publisher) busy service
  local n=2000 rule svc s ms joins
  rule=$(rule_for org.example.Plain)
  ctl "$rule" --expect=$n --idle-exit=2000 --max-time=60000
  start service /usr/bin/python3 "$HERE/plain_service.py" org.example.Plain --count=$n --busy-ms=3000 \
    --calls="$RUN/calls.log" --ready="$RUN/service.ready" --go="$RUN/go"
  svc=$LAST_PID
  wait_file "$RUN/service.ready" 15 || { REASONS="plain_service.py did not start: $(tail -c 200 "$RUN/service.err")"; return; }
  touch "$RUN/go"
  sleep 0.2  # the service is now busy for 3 s
  sub subscriber "$rule" --loop="$LOOP" --expect=$n --idle-exit=2000 --max-time=60000; s=$LAST_PID
  finish "$svc" 20; check_rc service $RC
  finish "$CTL_PID" 5; check_rc control $RC
  finish "$s" 3; check_rc subscriber $RC "$KILLED_CPU"
  control_complete $n; judge subscriber
  ms=$(summary_field subscriber "subscribe")
  NOTES+=" subscribe() took ${ms:-?} ms; calls the service got: $(awk '{print $1}' "$RUN/calls.log" 2>/dev/null | sort | uniq -c | awk '{printf "%s%s x%s", sep, $2, $1; sep=", "}')."
  if [ -z "$ms" ] || awk -v m="$ms" 'BEGIN { exit !(m >= 100) }'; then
    REASONS+="${REASONS:+; }subscribe() took ${ms:-?} ms (limit 100)"
  fi
  joins=$(grep -c '^org\.mcbus\.Multicast1\.Join ' "$RUN/calls.log" 2>/dev/null || true)
  [ "${joins:-0}" = 0 ] || REASONS+="${REASONS:+; }the plain service received $joins org.mcbus.Multicast1.Join call(s)"
}

case_7() {  # a misbehaving publisher, mode $MODE
  local n=200 rule s cpu mc err
  rule=$(rule_for org.example.Fake)
  ctl "$rule" --expect=$n --idle-exit=2000 --max-time=30000
  start publisher "$FAKE" org.example.Fake --mode="$MODE" --count=$n --ready="$RUN/publisher.ready"
  local pub=$LAST_PID
  wait_file "$RUN/publisher.ready" 15 || { REASONS="fake_publisher did not start"; return; }
  # No --expect: with duplicates it would stop early. It stops 2 s after the last Tick.
  sub subscriber "$rule" --loop="$LOOP" --idle-exit=2000 --max-time=20000; s=$LAST_PID
  finish "$pub" 30; check_rc publisher $RC
  finish "$CTL_PID" 5; check_rc control $RC
  finish "$s" 5; check_rc subscriber $RC "$KILLED_CPU"
  control_complete $n
  local n_lines distinct dups inv y
  read -r n_lines distinct dups inv < <(seqstats "$RUN/subscriber.log")
  y=$(wc -l <"$RUN/control.log" 2>/dev/null || echo 0)
  DETAIL="subscriber got $distinct of $y, dups $dups, inversions $inv"
  [ "$dups" = 0 ] || REASONS+="${REASONS:+; }$dups duplicate seqs handed to the handler"
  [ "$inv" = 0 ] || REASONS+="${REASONS:+; }$inv out-of-order seqs handed to the handler"
  cpu=${KILLED_CPU:-$(summary_field subscriber "cpu")}
  if [ -z "$cpu" ] || [ "$cpu" = "?" ] || awk -v c="$cpu" 'BEGIN { exit !(c >= 2) }'; then
    REASONS+="${REASONS:+; }subscriber CPU ${cpu:-unknown} s (limit 2)"
  fi
  local rf; rf=$(summary_field subscriber "read failures")
  [ "${rf:-0}" = 0 ] || REASONS+="${REASONS:+; }$rf unreadable Ticks"
  mc=$(summary_field subscriber "via multicast")
  # a (a stream socket: a member must refuse it at Join) and e (the group closes before the first
  # Tick) leave only the bus copies; in b, c and d a member that took nothing from the group must
  # have got the bus copies instead.
  if ! cmp -s "$RUN/subscriber.log" "$RUN/control.log"; then
    if [ "$MODE" = a ] || [ "$MODE" = e ]; then REASONS+="${REASONS:+; }mode $MODE leaves only the bus copies but the log differs from control"
    elif [ "${mc:-0}" = 0 ]; then REASONS+="${REASONS:+; }took nothing from the group but differs from control"; fi
  fi
  # A stream socket keeps no message boundaries: taking Ticks from it is a silent-loss risk.
  [ "$MODE" != a ] || [ "${mc:-0}" = 0 ] || REASONS+="${REASONS:+; }accepted a SOCK_STREAM group socket ($mc Ticks read from it)"
  cmp -s "$RUN/subscriber.log" "$RUN/control.log" && NOTES+=" equals control." || NOTES+=" differs from control."
  NOTES+=" via multicast ${mc:-?}, cpu ${cpu:-?} s."
  err=$(grep -v '^$' "$RUN/subscriber.err" 2>/dev/null | sort | uniq -c | awk '{$1 = $1 "x"; print}' | head -5 | paste -sd'|' - || true)
  NOTES+=" subscriber stderr: ${err:-(nothing)}."
}

# ---- the matrix --------------------------------------------------------------------------------
PASSED=0 FAILED=0
STAMP=$(date +%Y%m%d-%H%M%S)
T_ALL=$SECONDS
mkdir -p "$RUNS"
echo "trials: cases [$CASES] reps $REPS buses [$BUSES] transports [$TRANSPORTS] loops [$LOOPS]$([ "$BUSY" = 1 ] && echo ' busy'); logs in $RUNS/$STAMP"
for c in $CASES; do
  case $c in 1|2|3|4|5|6|7) ;; *) echo "run.sh: no case $c" >&2; exit 2 ;; esac
  modes=-; [ "$c" = 7 ] && modes="a b c d e"
  loops=$LOOPS; [ "$c" = 1 ] && loops=poll
  for mode in $modes; do
    for rep in $(seq "$REPS"); do
      for bus in $BUSES; do
        for transport in $TRANSPORTS; do
          for LOOP in $loops; do
            label="case $c${mode#-} rep $rep bus=$bus transport=$transport loop=$LOOP"
            if [ "$bus" = broker ] && [ "$BROKER_OK" = 0 ]; then echo "$label: SKIP (dbus-broker unavailable)"; continue; fi
            RUN=$RUNS/$STAMP/c$c${mode#-}-r$rep-$bus-$transport-$LOOP
            mkdir -p "$RUN"
            MODE=$mode REASONS="" DETAIL="" NOTES="" BUSY_RUN=$BUSY
            [ "$c" = 3 ] && BUSY_RUN=1
            t0=$(date +%s.%N)
            export MCBUS_TRANSPORT=$transport
            if start_bus "$bus"; then
              [ "$BUSY_RUN" = 1 ] && start_busy
              "case_$c"
            else
              REASONS="bus problem: $BUS_PROBLEM"
            fi
            stop_all
            dt=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
            if [ -z "$REASONS" ]; then verdict=PASS PASSED=$((PASSED + 1)); else verdict=FAIL FAILED=$((FAILED + 1)); fi
            echo "$label: $verdict (${DETAIL:-no subscriber result}) [${dt} s]${NOTES:+ —$NOTES}${REASONS:+ — $REASONS}"
            [ "$verdict" = PASS ] && [ "$KEEP" = 0 ] && rm -rf "$RUN"
          done
        done
      done
    done
  done
done
echo "matrix took $((SECONDS - T_ALL)) s; logs of failed runs in $RUNS/$STAMP"
echo "$PASSED passed, $FAILED failed"
[ "$FAILED" = 0 ]
