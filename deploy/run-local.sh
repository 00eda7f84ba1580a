#!/usr/bin/env bash
# Runs processor in the background and ingest in the foreground, both with
# text logs, until ingest stops. Ctrl-C stops both. `make run` builds the
# binaries and calls this script.
#
# Usage: deploy/run-local.sh [BIN_DIR]   (BIN_DIR defaults to bin)
#
# Configuration comes from the HOOKBUS_* environment variables (run
# bin/ingest -h and bin/processor -h for the list). When HOOKBUS_AMQP_URL is
# unset, both programs use the broker on 127.0.0.1:5672, and this script
# checks first that it accepts connections.
set -euo pipefail

bin_dir="${1:-bin}"
# Seconds that the processor gets to finish after its SIGTERM before it is
# killed. Its own default HOOKBUS_SHUTDOWN_GRACE is 25s.
readonly processor_stop_seconds=35

for program in ingest processor; do
  if [[ ! -x "$bin_dir/$program" ]]; then
    echo "run-local: $bin_dir/$program not found; run make build first" >&2
    exit 1
  fi
done

if [[ -z "${HOOKBUS_AMQP_URL:-}" ]]; then
  if ! timeout 2 bash -c '</dev/tcp/127.0.0.1/5672' 2>/dev/null; then
    cat >&2 <<'EOF'
run-local: no RabbitMQ broker accepts connections on 127.0.0.1:5672.
Start one, then run make run again:
  rabbitmq-server -detached    (RabbitMQ installed on this machine)
  docker run -d --name rabbitmq -p 5672:5672 -p 15672:15672 rabbitmq:3.13-management
Or set HOOKBUS_AMQP_URL to the URL of another broker.
EOF
    exit 1
  fi
fi

export HOOKBUS_LOG_FORMAT="${HOOKBUS_LOG_FORMAT:-text}"

# The processor runs in a session of its own, so that Ctrl-C (SIGINT to the
# terminal's foreground process group) reaches only this script and ingest.
# The EXIT trap then sends the processor exactly one SIGTERM and waits for its
# graceful shutdown; a second signal would make it exit at once.
setsid "$bin_dir/processor" &
processor_pid=$!

# The EXIT trap calls stop_processor, which shellcheck does not see.
# shellcheck disable=SC2317
stop_processor() {
  kill -TERM "$processor_pid" 2>/dev/null || true
  local deadline=$((SECONDS + processor_stop_seconds))
  while kill -0 "$processor_pid" 2>/dev/null && ((SECONDS < deadline)); do
    sleep 0.2
  done
  if kill -0 "$processor_pid" 2>/dev/null; then
    echo "run-local: processor still running after ${processor_stop_seconds}s, killing it" >&2
    kill -KILL "$processor_pid" 2>/dev/null || true
  fi
  wait "$processor_pid" 2>/dev/null || true
}
trap stop_processor EXIT

# Ingest runs in the background so that `wait` returns when this script gets
# a signal; the trap passes the signal on as SIGTERM, which ingest handles
# like Ctrl-C.
"$bin_dir/ingest" &
ingest_pid=$!
trap 'kill -TERM "$ingest_pid" 2>/dev/null || true' INT TERM HUP

ingest_status=0
while kill -0 "$ingest_pid" 2>/dev/null; do
  ingest_status=0
  wait "$ingest_pid" || ingest_status=$?
done
exit "$ingest_status"
