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
# Seconds that the processor gets to finish after Ctrl-C before it receives
# SIGTERM. Its own default HOOKBUS_SHUTDOWN_GRACE is 25s.
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

# Ctrl-C sends SIGINT to the terminal's whole foreground process group:
# this script, ingest and the processor. Bash starts background jobs with
# SIGINT ignored, but Go installs its own handler, so the processor receives
# the signal too. The trap records it, and stop_processor then waits for the
# processor's own shutdown. A second signal would make the processor exit at
# once.
interrupted=false
trap 'interrupted=true' INT

"$bin_dir/processor" &
processor_pid=$!

# The EXIT trap calls stop_processor, which shellcheck does not see.
# shellcheck disable=SC2317
stop_processor() {
  if [[ "$interrupted" == true ]]; then
    local deadline=$((SECONDS + processor_stop_seconds))
    while kill -0 "$processor_pid" 2>/dev/null && ((SECONDS < deadline)); do
      sleep 0.2
    done
  fi
  if kill -0 "$processor_pid" 2>/dev/null; then
    kill -TERM "$processor_pid" 2>/dev/null || true
  fi
  wait "$processor_pid" 2>/dev/null || true
}
trap stop_processor EXIT

ingest_status=0
"$bin_dir/ingest" || ingest_status=$?
exit "$ingest_status"
