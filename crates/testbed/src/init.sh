#!/bin/busybox sh
# PID 1 of the vnet test guest (built by vnet-testbed, src/init.sh).
#
# Reads vnet.* parameters from the kernel command line, brings eth0 up, runs the requested
# tests and reports on the console with lines the harness parses:
#
#   VNET-READY ip=198.18.0.2/24 mac=52:54:00:12:34:02 mtu=1500 uptime=1.92
#   VNET-INFO features=<virtio feature bits, bit 0 first>
#   VNET-RESULT <test> ok|fail key=value ...
#   VNET-DONE
#   VNET-ERROR <what went wrong>
#
# Parameters: vnet.ip=ADDR/LEN, vnet.peer=ADDR, vnet.mtu=N, vnet.role=server|client|idle,
# vnet.tests=ping,ping_big,iperf_tx,iperf_rx,iperf_tx_p2,iperf_rx_p2 (the _p2 tests run two
# parallel streams, -P 2), vnet.iperf_secs=N, vnet.wait=SECS (how long a
# client waits for its peer), vnet.duration=SECS (how long a server serves at most),
# vnet.stop_peer=1 (a client tells its server to finish when done),
# vnet.after=poweroff|stay (what to do after VNET-DONE).

/bin/busybox mkdir -p /bin /sbin /usr/bin /usr/sbin /proc /sys /dev /tmp /run
/bin/busybox --install -s
export PATH=/sbin:/usr/sbin:/bin:/usr/bin
export LD_LIBRARY_PATH=/lib/x86_64-linux-gnu
export HOME=/root

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
exec </dev/console >/dev/console 2>&1

IP=
PEER=
MTU=
ROLE=
TESTS=
SECS=3
WAIT=60
DURATION=
STOP_PEER=0
AFTER=poweroff
CONTROL_PORT=5299

for arg in $(cat /proc/cmdline); do
    case "$arg" in
        vnet.ip=*) IP=${arg#vnet.ip=} ;;
        vnet.peer=*) PEER=${arg#vnet.peer=} ;;
        vnet.mtu=*) MTU=${arg#vnet.mtu=} ;;
        vnet.role=*) ROLE=${arg#vnet.role=} ;;
        vnet.tests=*) TESTS=${arg#vnet.tests=} ;;
        vnet.iperf_secs=*) SECS=${arg#vnet.iperf_secs=} ;;
        vnet.wait=*) WAIT=${arg#vnet.wait=} ;;
        vnet.duration=*) DURATION=${arg#vnet.duration=} ;;
        vnet.stop_peer=*) STOP_PEER=${arg#vnet.stop_peer=} ;;
        vnet.after=*) AFTER=${arg#vnet.after=} ;;
    esac
done
if [ -z "$ROLE" ]; then
    if [ -n "$TESTS" ]; then ROLE=client; else ROLE=idle; fi
fi

say() { echo "$*"; }

uptime_secs() { cut -d' ' -f1 /proc/uptime; }

# Never returns: PID 1 exiting panics the kernel.
finish() {
    say "VNET-DONE"
    if [ "$AFTER" = stay ]; then
        while :; do sleep 3600; done
    fi
    sync
    poweroff -f
    while :; do sleep 3600; done
}

die() {
    say "VNET-ERROR $*"
    finish
}

# The virtio-net driver and what it needs, in load order (numbered file names).
for m in /lib/modules/vnet/*.ko; do
    insmod "$m" || say "VNET-ERROR insmod $m failed"
done

i=0
while [ ! -e /sys/class/net/eth0 ]; do
    i=$((i + 1))
    [ $i -gt 200 ] && die "no eth0 after 20 s (virtio-net probe failed?)"
    sleep 0.1
done

ip link set lo up
if [ -n "$MTU" ]; then
    ip link set eth0 mtu "$MTU" || say "VNET-ERROR cannot set mtu $MTU"
fi
[ -n "$IP" ] && { ip addr add "$IP" dev eth0 || die "cannot add address $IP"; }
ip link set eth0 up || die "cannot bring eth0 up"

# A server listens before it says it is ready; so does a client, so that two clients can
# ping each other while one also runs iperf3 against the other.
if [ "$ROLE" = server ] || [ "$ROLE" = client ]; then
    iperf3 -s >/tmp/iperf3-server.log 2>&1 &
fi

# Carrier (VIRTIO_NET_F_STATUS): up when the device says the link is up.
i=0
while [ "$(cat /sys/class/net/eth0/operstate)" != up ] && [ $i -lt 100 ]; do
    i=$((i + 1))
    sleep 0.1
done

MAC=$(cat /sys/class/net/eth0/address)
say "VNET-READY ip=${IP:-none} mac=$MAC mtu=$(cat /sys/class/net/eth0/mtu) operstate=$(cat /sys/class/net/eth0/operstate) uptime=$(uptime_secs)"
if [ -r /sys/class/net/eth0/device/features ]; then
    say "VNET-INFO features=$(cat /sys/class/net/eth0/device/features)"
fi

result() { say "VNET-RESULT $*"; }

# Waits until the peer answers a ping; the switch learns both MACs on the way.
PEER_UP=
wait_peer() {
    [ -n "$PEER_UP" ] && return 0
    [ -z "$PEER" ] && return 1
    start=$(uptime_secs)
    end=$(($(date +%s) + WAIT))
    while [ "$(date +%s)" -lt $end ]; do
        if ping -c 1 -W 1 "$PEER" >/dev/null 2>&1; then
            PEER_UP=1
            say "VNET-INFO peer=$PEER reachable after_s=$(awk -v a="$start" -v b="$(uptime_secs)" 'BEGIN { printf "%.2f", b - a }')"
            return 0
        fi
        sleep 0.2
    done
    return 1
}

# ping NAME SIZE COUNT
t_ping() {
    if ! wait_peer; then
        result "$1 fail peer=${PEER:-none} unreachable after ${WAIT}s"
        return
    fi
    out=$(ping -c "$3" -i 0.2 -W 2 -s "$2" "$PEER" 2>&1)
    sent=$(echo "$out" | sed -n 's/^\([0-9]*\) packets transmitted.*/\1/p')
    recv=$(echo "$out" | sed -n 's/.* \([0-9]*\) packets received.*/\1/p')
    loss=$(echo "$out" | sed -n 's/.* \([0-9]*\)% packet loss.*/\1/p')
    avg=$(echo "$out" | sed -n 's#.*min/avg/max = [0-9.]*/\([0-9.]*\)/.*#\1#p')
    if [ -n "$recv" ] && [ "$recv" = "$sent" ] && [ "$recv" -gt 0 ]; then
        result "$1 ok rtt_avg_ms=$avg loss=${loss}% sent=$sent received=$recv size=$2"
    else
        result "$1 fail rtt_avg_ms=${avg:-none} loss=${loss:-100}% sent=${sent:-0} received=${recv:-0} size=$2"
        echo "$out" | sed 's/^/  ping: /'
    fi
}

# iperf NAME [EXTRA ARGS]: TCP for SECS seconds, reporting what the receiver got.
t_iperf() {
    name=$1
    shift
    if ! wait_peer; then
        result "$name fail peer=${PEER:-none} unreachable after ${WAIT}s"
        return
    fi
    try=0
    while :; do
        out=$(iperf3 -c "$PEER" -t "$SECS" -J "$@" 2>&1)
        echo "$out" | grep -q 'unable to connect' || break
        try=$((try + 1))
        [ $try -ge 5 ] && break
        sleep 1
    done
    bps=$(echo "$out" | awk '/"sum_received"/ { f = 1 } f && /"bits_per_second"/ { v = $2; gsub(/[^0-9.eE+-]/, "", v); print v; exit }')
    retr=$(echo "$out" | awk '/"sum_sent"/ { f = 1 } f && /"retransmits"/ { v = $2; gsub(/[^0-9]/, "", v); print v; exit }')
    if [ -n "$bps" ]; then
        gbps=$(awk -v b="$bps" 'BEGIN { printf "%.3f", b / 1e9 }')
        result "$name ok gbps=$gbps retransmits=${retr:-0} secs=$SECS"
    else
        err=$(echo "$out" | sed -n 's/.*"error":[[:space:]]*"\(.*\)".*/\1/p' | head -n 1)
        result "$name fail error=\"${err:-no result}\""
        echo "$out" | tail -n 20 | sed 's/^/  iperf3: /'
    fi
}

run_test() {
    case "$1" in
        ping) t_ping ping 56 10 ;;
        ping_big) t_ping ping_big $(($(cat /sys/class/net/eth0/mtu) - 28)) 5 ;;
        iperf_tx) t_iperf iperf_tx ;;
        iperf_rx) t_iperf iperf_rx -R ;;
        iperf_tx_p2) t_iperf iperf_tx_p2 -P 2 ;;
        iperf_rx_p2) t_iperf iperf_rx_p2 -R -P 2 ;;
        *) result "$1 fail unknown test" ;;
    esac
}

case "$ROLE" in
    server)
        # Serves (iperf3 answers on 5201, the kernel answers pings) until a client connects to
        # the control port (vnet.stop_peer=1), vnet.duration runs out, or the harness kills
        # the VM.
        if [ -n "$DURATION" ]; then
            timeout "$DURATION" nc -l -p $CONTROL_PORT >/dev/null 2>&1
        else
            nc -l -p $CONTROL_PORT >/dev/null 2>&1
        fi
        result "serve ok"
        ;;
    client)
        for t in $(echo "$TESTS" | tr ',' ' '); do
            run_test "$t"
        done
        if [ "$STOP_PEER" = 1 ] && [ -n "$PEER" ]; then
            echo stop | nc -w 2 "$PEER" $CONTROL_PORT >/dev/null 2>&1
        fi
        ;;
    idle)
        AFTER=stay
        ;;
    *)
        say "VNET-ERROR unknown role $ROLE"
        ;;
esac
finish
