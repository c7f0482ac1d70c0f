#!/usr/bin/env bash
# benches/e2e.sh: the end-to-end benchmark between two network-namespace
# hosts on a bridge. For each group kind (multicast, broadcast, unicast),
# loss (0% and 5% at the receiver, by nftables) and record size (64 B,
# 256 B, 1 KiB) it runs `castlog bench` raw (plain UDP, best kernel method)
# and through two castlogd daemons, and prints one table with castlog as a
# ratio of the raw figure of the same run.
#
#   sudo benches/e2e.sh                 # the full table
#   SIZES="1024" KINDS="multicast" LOSSES="0" benches/e2e.sh
#   RECORDS_64=2000000 RECORDS_1024=300000 benches/e2e.sh
#
# After the throughput table it prints: the command-line path (`castlog pub`
# from a file of lines into `castlog sub`), the round trip (ping/pong, 32 B)
# for each netconf `idle` policy against raw UDP, and the publisher's CPU
# per record with 1 and with FANOUT (default 8) receiving hosts (with
# `idle = "block"`, so that the CPU is the work, not polling). The table
# also gives each daemon's peak RSS (VmHWM) and the publishing daemon's CPU
# per record. SECTIONS="table cli rtt fanout" chooses what runs.
#
# Needs root, iproute2 and nftables (installed by .ci/run). Everything it
# creates is removed on exit, even on failure.
set -euo pipefail
cd "$(dirname "$0")/.."

KINDS=${KINDS:-"multicast broadcast unicast"}
LOSSES=${LOSSES:-"0 5"}
SIZES=${SIZES:-"64 256 1024"}
SECTIONS=${SECTIONS:-"table cli rtt fanout"}
FANOUT=${FANOUT:-8}
HOSTS=2
case " $SECTIONS " in *" fanout "*) HOSTS=$((FANOUT + 1)) ;; esac
NET=10.231.7
NAME=ce$$
BR=$NAME-br
WORK=$(mktemp -d /tmp/castlog-e2e.XXXXXX)
PIDS=()

cleanup() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  sleep 0.2
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill -9 "$p" 2>/dev/null || true; done
  for i in $(seq "$HOSTS"); do ip netns del "$NAME-$i" 2>/dev/null || true; done
  ip link del "$BR" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
trap "exit 130" INT TERM

cargo build --release --quiet --bin castlog --bin castlogd
BIN=$PWD/target/release

# Socket buffer caps are host-wide on this kernel; the daemons ask for large ones.
sysctl -qw net.core.rmem_max=67108864 net.core.wmem_max=67108864 2>/dev/null || true
ip link add "$BR" type bridge
echo 0 > "/sys/class/net/$BR/bridge/multicast_snooping" 2>/dev/null || true
ip link set "$BR" up
for i in $(seq "$HOSTS"); do
  h=$NAME-$i
  ip netns add "$h"
  ip link add "$h-p" type veth peer name "$h-e"
  ip link set "$h-p" master "$BR" up
  ip link set "$h-e" netns "$h"
  ip -n "$h" link set "$h-e" name eth0
  ip -n "$h" addr add "$NET.$i/24" brd + dev eth0
  ip -n "$h" link set eth0 up
  ip -n "$h" link set lo up
  ip -n "$h" route add 224.0.0.0/4 dev eth0
  ip netns exec "$h" sysctl -qw net.core.rmem_max=67108864 net.core.wmem_max=67108864 2>/dev/null || true
done

on() { local i=$1; shift; ip netns exec "$NAME-$i" "$@"; }

set_loss() {
  on 2 nft delete table inet e2eloss 2>/dev/null || true
  if [ "$1" != 0 ]; then
    on 2 nft add table inet e2eloss
    on 2 nft add chain inet e2eloss in '{ type filter hook prerouting priority -300; }'
    on 2 nft add rule inet e2eloss in meta l4proto udp numgen random mod 100 lt "$1" drop
  fi
}

netconf() { # kind host [idle]
  local kind=$1 i=$2 idle=${3:-block}
  cat <<TOML
[node]
name = "h$i"
listen = "$NET.$i:7500"
data-dir = "$WORK/h$i-$kind"
socket = "$WORK/h$i.sock"
fsync = "interval"
idle = "$idle"

TOML
  case $kind in
    # One daemon per host: nothing on the sender's host needs its own
    # multicast, and the looped-back copy would double its kernel work.
    multicast) printf '[group.g]\nkind = "multicast"\naddress = "239.255.231.7:7400"\ninterface = "%s"\nttl = 1\nloopback = false\n' "$NET.$i" ;;
    broadcast) printf '[group.g]\nkind = "broadcast"\naddress = "%s.255:7401"\n' "$NET" ;;
    unicast)   printf '[group.g]\nkind = "unicast"\nport = 7402\npeers = ["%s.1:7402", "%s.2:7402"]\n' "$NET" "$NET" ;;
  esac
  printf '\n[[topic]]\npattern = "*"\ngroup = "g"\n'
}

raw_peer() {
  case $1 in
    multicast) echo "239.255.231.8:7600" ;;
    broadcast) echo "$NET.255:7600" ;;
    unicast)   echo "$NET.2:7600" ;;
  esac
}

records_for() { local v="RECORDS_$1"; echo "${!v:-$(( $1 <= 64 ? 2000000 : ($1 <= 256 ? 1000000 : 400000) ))}"; }

# A top-level field of the one-line JSON report on stdin (numbers, true/false,
# strings); booleans as True/False, as the table has always shown them.
field() {
  sed -n "s/.*\"$1\":\(\"[^\"]*\"\|[^,}]*\).*/\1/p" | tr -d '"' |
    sed 's/^true$/True/; s/^false$/False/'
}

# start_daemons KIND IDLE HOST...: one castlogd per host, waits for sockets.
start_daemons() {
  local kind=$1 idle=$2; shift 2
  for i in "$@"; do
    netconf "$kind" "$i" "$idle" > "$WORK/h$i.toml"
    rm -rf "$WORK/h$i-$kind" "$WORK/h$i.sock"
    # Not through `on`: a function in the background would be a subshell,
    # and killing it would leave the daemon running.
    ip netns exec "$NAME-$i" "$BIN/castlogd" --netconf "$WORK/h$i.toml" 2> "$WORK/h$i.log" &
    PIDS+=($!)
    eval "PID_$i=$!"
  done
  for i in "$@"; do for _ in $(seq 100); do [ -S "$WORK/h$i.sock" ] && break; sleep 0.05; done; done
  sleep 0.5
}

stop_daemons() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  PIDS=()
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hwm_mib() { awk '/VmHWM/ {printf "%.0f", $2 / 1024}' "/proc/$1/status"; }
tick_us() { echo $((1000000 / $(getconf CLK_TCK))); }

if [[ " $SECTIONS " == *" table "* ]]; then
printf '%-10s %-5s %-6s %14s %14s %12s %12s %8s %9s %10s %9s\n' kind loss size raw_rec/s castlog_rec/s raw_MB/s castlog_MB/s ratio complete pub_cpu_us rss_MiB
for kind in $KINDS; do
  for loss in $LOSSES; do
    set_loss "$loss"
    for size in $SIZES; do
      n=$(records_for "$size")
      # raw
      group_args=""
      [ "$kind" = multicast ] && group_args="--group 239.255.231.8 --interface $NET.2"
      ip netns exec "$NAME-2" "$BIN/castlog" bench --raw --role subscriber --bind 0.0.0.0:7600 $group_args \
        --size "$size" --count "$n" --idle-timeout 2 --json > "$WORK/raw.json" 2>/dev/null &
      rp=$!; sleep 0.5
      on 1 "$BIN/castlog" bench --raw --role publisher --peer "$(raw_peer "$kind")" --interface "$NET.1" --size "$size" --count "$n" --json > /dev/null
      wait $rp || true
      raw_rps=$(field records_per_sec < "$WORK/raw.json"); raw_mbs=$(field mb_per_sec < "$WORK/raw.json")
      # castlog, with the default idle policy (IDLE to choose another)
      start_daemons "$kind" "${IDLE:-backoff}" 1 2
      ip netns exec "$NAME-2" "$BIN/castlog" --socket "$WORK/h2.sock" bench --role subscriber --size "$size" --count "$n" --idle-timeout 5 --json > "$WORK/cl.json" 2>/dev/null &
      sp=$!; sleep 0.5
      t0=$(cpu_ticks "$PID_1")
      on 1 "$BIN/castlog" --socket "$WORK/h1.sock" bench --role publisher --size "$size" --count "$n" --json > /dev/null
      wait $sp || true
      t1=$(cpu_ticks "$PID_1")
      pub_cpu=$(( (t1 - t0) * $(tick_us) * 1000 / n ))
      rss="$(hwm_mib "$PID_1")/$(hwm_mib "$PID_2")"
      cl_rps=$(field records_per_sec < "$WORK/cl.json"); cl_mbs=$(field mb_per_sec < "$WORK/cl.json"); complete=$(field complete < "$WORK/cl.json")
      # An incomplete run says what was wrong: missing / duplicate records.
      [ "$complete" = True ] || complete="$complete/m$(field missing < "$WORK/cl.json")d$(field duplicates < "$WORK/cl.json")"
      if [ "$complete" != True ] && [ -n "${DEBUG_STATS:-}" ]; then
        on 2 "$BIN/castlog" --socket "$WORK/h2.sock" stats --json >&2 || true
        cat "$WORK/cl.json" >&2
      fi
      stop_daemons
      ratio=$(awk -v r="${raw_mbs:-0}" -v c="${cl_mbs:-0}" 'BEGIN { if (r > 0) printf "%.2f", c / r; else print "n/a" }')
      printf '%-10s %-5s %-6s %14.0f %14.0f %12.1f %12.1f %8s %9s %10s %9s\n' "$kind" "$loss%" "$size" "${raw_rps:-0}" "${cl_rps:-0}" "${raw_mbs:-0}" "${cl_mbs:-0}" "$ratio" "${complete:-?}" "$(printf '%d.%03d' $((pub_cpu / 1000)) $((pub_cpu % 1000)))" "$rss"
    done
  done
done
set_loss 0
fi

# The command line: `castlog pub` reading one record per line from a file,
# `castlog sub` writing one per line, multicast, 64-byte lines.
if [[ " $SECTIONS " == *" cli "* ]]; then
  n=$(records_for 64)
  awk -v n="$n" 'BEGIN { x = sprintf("%51s", ""); gsub(/ /, "x", x); for (i = 0; i < n; i++) printf "%012d%s\n", i, x }' > "$WORK/lines"
  start_daemons multicast "${IDLE:-backoff}" 1 2
  ip netns exec "$NAME-2" "$BIN/castlog" --socket "$WORK/h2.sock" sub e2e.cli --count "$n" --idle-timeout 5 > "$WORK/cli.out" 2>/dev/null &
  sp=$!; sleep 0.5
  c0=$(date +%s.%N)
  on 1 "$BIN/castlog" --socket "$WORK/h1.sock" pub e2e.cli --mode oneway < "$WORK/lines"
  wait $sp || true
  c1=$(date +%s.%N)
  stop_daemons
  got=$(wc -l < "$WORK/cli.out")
  same=$(cmp -s "$WORK/lines" "$WORK/cli.out" && echo true || echo false)
  echo
  printf 'cli: castlog pub < file | castlog sub, multicast, 64 B lines: %s records in %.2f s = %.0f records/s, output identical to input: %s\n' \
    "$got" "$(awk -v a="$c0" -v b="$c1" 'BEGIN { print b - a }')" "$(awk -v a="$c0" -v b="$c1" -v g="$got" 'BEGIN { print g / (b - a) }')" "$same"
fi

# Round trip, 32 B, ping on host 1, pong on host 2, multicast.
if [[ " $SECTIONS " == *" rtt "* ]]; then
  n=${RTT_COUNT:-20000}
  echo
  printf '%-34s %10s %10s %10s\n' rtt_32B p50_us p90_us p99_us
  # Blocking clients first, then clients that poll without sleeping
  # (`--busy-poll`, as Aeron's clients and the issue's raw busy-poll
  # reference do), each against the raw UDP figure of the same kind.
  for poll in "" --busy-poll; do
    label=$([ -z "$poll" ] && echo "blocking recv" || echo "busy-poll")
    ip netns exec "$NAME-2" "$BIN/castlog" bench --raw --role pong --bind "$NET.2:7601" --size 32 --idle-timeout 2 $poll --json > /dev/null 2>&1 &
    rp=$!; sleep 0.3
    on 1 "$BIN/castlog" bench --raw --role ping --peer "$NET.2:7601" --interface "$NET.1" --size 32 --count "$n" $poll --json > "$WORK/rtt.json" || true
    wait $rp || true
    printf '%-34s %10s %10s %10s\n' "raw ($label)" "$(field p50_us < "$WORK/rtt.json")" "$(field p90_us < "$WORK/rtt.json")" "$(field p99_us < "$WORK/rtt.json")"
    idles="block backoff yield spin"
    # Spinning daemons and spinning clients are four busy processes on
    # two cores here: time slices, not latency. Only `yield` shares.
    [ -n "$poll" ] && idles="yield"
    for idle in $idles; do
      start_daemons multicast "$idle" 1 2
      ip netns exec "$NAME-2" "$BIN/castlog" --socket "$WORK/h2.sock" bench --role pong --size 32 --idle-timeout 2 $poll --json > /dev/null 2>&1 &
      pp=$!; sleep 0.5
      on 1 "$BIN/castlog" --socket "$WORK/h1.sock" bench --role ping --size 32 --count "$n" $poll --json > "$WORK/rtt.json" || true
      wait $pp || true
      stop_daemons
      printf '%-34s %10s %10s %10s\n' "castlog idle=$idle${poll:+, clients busy-poll}" "$(field p50_us < "$WORK/rtt.json")" "$(field p90_us < "$WORK/rtt.json")" "$(field p99_us < "$WORK/rtt.json")"
    done
  done
fi

# Fan-out: the publishing daemon's CPU per record with 1 and with FANOUT
# receiving hosts on one multicast group (64 B records), both at the same
# paced rate (FANOUT_RATE records/s), so that the comparison is not skewed
# by how much each round batches: nine daemons share this machine's cores.
if [[ " $SECTIONS " == *" fanout "* ]]; then
  n=${FANOUT_RECORDS:-1000000}
  rate=${FANOUT_RATE:-200000}
  echo
  printf '%-16s %14s %16s %9s\n' fanout castlog_rec/s pub_cpu_us/rec complete
  for receivers in 1 "$FANOUT"; do
    hosts=$(seq 1 $((receivers + 1)))
    start_daemons multicast block $hosts  # CPU of the work, not of polling
    ip netns exec "$NAME-2" "$BIN/castlog" --socket "$WORK/h2.sock" bench --role subscriber --size 64 --count "$n" --idle-timeout 5 --json > "$WORK/fan.json" 2>/dev/null &
    sp=$!; sleep 0.5
    t0=$(cpu_ticks "$PID_1")
    on 1 "$BIN/castlog" --socket "$WORK/h1.sock" bench --role publisher --size 64 --count "$n" --rate "$rate" --json > /dev/null
    wait $sp || true
    t1=$(cpu_ticks "$PID_1")
    stop_daemons
    cpu=$(( (t1 - t0) * $(tick_us) * 1000 / n ))
    printf '%-16s %14.0f %16s %9s\n' "$receivers receiver(s)" "$(field records_per_sec < "$WORK/fan.json")" "$(printf '%d.%03d' $((cpu / 1000)) $((cpu % 1000)))" "$(field complete < "$WORK/fan.json")"
  done
fi
