#!/usr/bin/env bash
# Idempotent Docker engine setup for the fleet tests (CI and developers).
#
#   engine.sh start   install docker.io, mmdebstrap, docker-registry if missing;
#                     start dockerd in the background unless an engine already answers;
#                     wait (bounded) until `docker info` answers.
#   engine.sh stop    stop the test registry the harness started (pid file) and dockerd,
#                     each only if it was started by us.
#   engine.sh status  print whether an engine answers and who started it.
#
# dockerd started here logs to /tmp/abri-dockerd.log, its pid is kept in /tmp/abri-dockerd.pid.
# It trusts the local test registry (plain HTTP on the docker bridge gateway) through
# --insecure-registry for the private 172.16.0.0/12 range, so images can be pushed to it.
set -euo pipefail

LOG=${ABRI_DOCKERD_LOG:-/tmp/abri-dockerd.log}
PIDFILE=${ABRI_DOCKERD_PIDFILE:-/tmp/abri-dockerd.pid}
WAIT_SECONDS=${ABRI_DOCKERD_WAIT:-60}

say() { echo "engine.sh: $*" >&2; }
die() { say "ERROR: $*"; exit 1; }

need_root() {
    [ "$(id -u)" = 0 ] || die "must run as root (installs packages and starts dockerd)"
}

apt_updated=0
ensure_pkg() { # ensure_pkg COMMAND PACKAGE...
    local cmd=$1; shift
    if command -v "$cmd" >/dev/null 2>&1; then return 0; fi
    need_root
    if [ "$apt_updated" = 0 ]; then
        say "apt-get update"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq || die "apt-get update failed"
        apt_updated=1
    fi
    say "installing $*"
    # Packages must not start their services (docker, docker-registry, ...) on their own:
    # this script starts dockerd itself, with the options the fleet needs.
    local policy=/usr/sbin/policy-rc.d made_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 0755 "$policy" && made_policy=1
    fi
    local rc=0
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" || rc=$?
    [ "$made_policy" = 1 ] && rm -f "$policy"
    [ "$rc" = 0 ] || die "apt-get install $* failed"
}

engine_answers() { timeout 10 docker info >/dev/null 2>&1; }

our_pid() { # prints the pid of the dockerd we started, if it still runs
    [ -f "$PIDFILE" ] || return 1
    local pid; pid=$(cat "$PIDFILE")
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
    # make sure the pid still belongs to a dockerd (pids get reused)
    grep -q dockerd "/proc/$pid/cmdline" 2>/dev/null || return 1
    echo "$pid"
}

start() {
    ensure_pkg dockerd docker.io
    ensure_pkg mmdebstrap mmdebstrap
    ensure_pkg docker-registry docker-registry
    # a few helpers the image builds rely on
    ensure_pkg curl curl
    ensure_pkg iptables iptables
    ensure_pkg ssh-keygen openssh-client
    ensure_pkg ip iproute2
    if engine_answers; then
        if pid=$(our_pid); then say "dockerd already running (started by engine.sh, pid $pid)";
        else
            say "a Docker engine already answers (not started by engine.sh; leaving it alone)"
            if ! docker info --format '{{json .RegistryConfig.InsecureRegistryCIDRs}}' 2>/dev/null \
                    | grep -q '172.16.0.0/12'; then
                say "WARNING: that engine does not trust the test registry (plain HTTP on the"
                say "  bridge gateway, 172.17.0.1:5000); pushing to it will fail. Add"
                say '  "insecure-registries": ["172.16.0.0/12"] to /etc/docker/daemon.json and'
                say "  restart it, or stop it and let engine.sh start its own dockerd."
            fi
        fi
        return 0
    fi
    need_root
    if pid=$(our_pid); then
        say "dockerd pid $pid exists but does not answer yet; waiting"
    else
        say "starting dockerd (log: $LOG)"
        rm -f "$PIDFILE"
        # setsid -f: dockerd runs in a session of its own, out of the caller's process group,
        # whatever the caller's job control. dockerd writes its pid file itself, so the pid in
        # it is dockerd's, never a shell's that has not yet exec'd it (CI once read it too early).
        setsid -f dockerd --pidfile "$PIDFILE" --insecure-registry 172.16.0.0/12 \
            >>"$LOG" 2>&1 </dev/null
    fi
    local i
    for ((i = 0; i < WAIT_SECONDS; i++)); do
        if engine_answers; then say "docker engine is up"; return 0; fi
        # dockerd writes its pid file within a moment of starting; give it 10 s to do so
        if ! our_pid >/dev/null && [ "$i" -ge 10 ]; then
            say "dockerd exited; last lines of $LOG:"; tail -n 20 "$LOG" >&2 || true
            rm -f "$PIDFILE"
            die "dockerd failed to start"
        fi
        sleep 1
    done
    tail -n 20 "$LOG" >&2 || true
    die "docker info did not answer within ${WAIT_SECONDS}s (see $LOG)"
}

stop_registry() {
    local pidfile=/tmp/abri-test-registry.pid pid
    [ -f "$pidfile" ] || return 0
    pid=$(cat "$pidfile")
    if [ -n "$pid" ] && grep -q docker-registry "/proc/$pid/cmdline" 2>/dev/null; then
        say "stopping the test registry pid $pid"
        kill -TERM "$pid" || true
    fi
    rm -f "$pidfile"
}

stop() {
    local pid
    stop_registry
    if ! pid=$(our_pid); then
        say "no dockerd started by engine.sh is running; nothing to stop"
        rm -f "$PIDFILE"
        return 0
    fi
    say "stopping dockerd pid $pid"
    kill -TERM "$pid"
    local i
    for ((i = 0; i < 30; i++)); do
        kill -0 "$pid" 2>/dev/null || { rm -f "$PIDFILE"; say "stopped"; return 0; }
        sleep 1
    done
    die "dockerd pid $pid did not stop within 30s"
}

status() {
    if engine_answers; then echo "engine: answering"; else echo "engine: not answering"; fi
    if pid=$(our_pid); then echo "started by engine.sh: pid $pid"; else echo "started by engine.sh: no"; fi
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
