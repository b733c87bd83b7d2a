#!/usr/bin/env bash
# make demo: Interlock's main job end to end on this machine, as root.
#
#  1. starts a throwaway PostgreSQL on 127.0.0.1:25432 (below the ephemeral port range, so no client socket holds it),
#  2. starts `interlock run` attached to a demo cgroup subtree (not the whole
#     host) with a private bpffs pin directory,
#  3. runs a scripted "agent" under `interlock exec`: it connects with psql to
#     the database address as if nothing were in between, with no valid
#     password (Interlock injects the real credentials), reads what its role
#     allows and is refused a DROP TABLE (SQLSTATE 42501) without losing its
#     session,
#  4. runs the agent's DELETE, which waits for a human: `interlock approvals
#     approve` on the control socket lets it run,
#  5. shows what the engine saw (agent, pid, executable, original destination,
#     each statement's decision),
#  6. shows that the same agent is refused a destination that is not a target,
#  7. lists the recorded sessions, replays the last one, verifies the log,
#  8. cleans everything up.
set -euo pipefail
BIN=$(realpath "${1:-bin/interlock}")
cd "$(dirname "$0")/../.."

if [ "$(id -u)" -ne 0 ]; then
	echo "make demo needs root (BPF programs, cgroups)" >&2
	exit 1
fi
bash test/scripts/deps.sh

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

PGBIN=$(dirname "$(ls -d /usr/lib/postgresql/*/bin/initdb | sort -V | tail -1)")
CG2=$(awk '$3=="cgroup2"{print $2; exit}' /proc/self/mounts)
WORK=$(mktemp -d /tmp/interlock-demo.XXXXXX)
# The agent runs as nobody (never as root, which could leave its cgroup),
# from a directory of its own.
AGENTDIR=$(mktemp -d /tmp/interlock-demo-agent.XXXXXX)
chmod 755 "$AGENTDIR"
chown nobody "$AGENTDIR"
DEMO_CG="$CG2/interlock-demo"
BPFFS="$WORK/bpffs"
PGPORT=25432
METRICS=127.0.0.1:29464
chown postgres "$WORK"
INTERLOCK_PID=

cleanup() {
	set +e
	say "cleaning up"
	[ -n "$INTERLOCK_PID" ] && kill "$INTERLOCK_PID" 2>/dev/null && wait "$INTERLOCK_PID" 2>/dev/null
	"$BIN" --config "$WORK/interlock.yaml" uninstall 2>/dev/null
	umount "$BPFFS" 2>/dev/null
	runuser -u postgres -- "$PGBIN/pg_ctl" -D "$WORK/pg" -m fast -w stop >/dev/null 2>&1
	[ -d "$DEMO_CG" ] && find "$DEMO_CG" -depth -type d -exec rmdir {} + 2>/dev/null
	rm -rf "$WORK" "$AGENTDIR"
	echo "done"
}
trap cleanup EXIT

say "starting a throwaway PostgreSQL on 127.0.0.1:$PGPORT"
echo "demo-secret" >"$WORK/pw" && chown postgres "$WORK/pw"
runuser -u postgres -- "$PGBIN/initdb" -D "$WORK/pg" -U postgres --pwfile "$WORK/pw" \
	--auth-host=scram-sha-256 --auth-local=trust --no-sync >/dev/null
cat >>"$WORK/pg/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $PGPORT
unix_socket_directories = '$WORK'
CONF
runuser -u postgres -- "$PGBIN/pg_ctl" -D "$WORK/pg" -l "$WORK/pg.log" -w start >/dev/null
echo "PostgreSQL is up"

mkdir -p "$BPFFS" "$DEMO_CG"
mount -t bpf bpf "$BPFFS"
echo "demo-secret" >"$WORK/db-password"
chmod 600 "$WORK/db-password"
runuser -u postgres -- psql -X -q -h "$WORK" -p $PGPORT -d postgres -c \
	"create table orders (id int primary key, customer text, amount numeric); insert into orders select g, 'customer-' || g, g * 10 from generate_series(1, 5) g;"
cat >"$WORK/policy.yaml" <<POLICY
version: 1
targets:
  - name: orders-db
    protocol: postgres
    address: 127.0.0.1:$PGPORT
    auth: inject             # the agent holds no database secret
    credentials: {user: postgres, password_file: $WORK/db-password}
    tls: {mode: disable}
agents:
  - name: demo-agent
    roles: [analyst]
    egress: deny             # reach the targets, nothing else
roles:
  - name: analyst
    rules:
      - {id: analyst-read, actions: [read], tables: ["public.*"], decision: allow}
      - id: analyst-delete-approval   # deletes wait for a human with the dba role
        actions: [delete]
        tables: [public.orders]
        decision: approve
        approval: {approvers: [dba], timeout: 60s}
rules:
  - {id: no-destruction, actions: [drop, truncate], decision: block, message: "DROP and TRUNCATE are not allowed for agents"}
POLICY
cat >"$WORK/interlock.yaml" <<CONFIG
policy: policy.yaml
state_dir: $WORK/state
redirect:
  cgroup: /interlock-demo     # the demo intercepts only below this cgroup
  guard_cgroup: /interlock-demo  # and guards the engine's ports only there (default: the whole host)
  pin_dir: $BPFFS/interlock
metrics:
  listen: $METRICS
api:
  socket: $WORK/interlock.sock
CONFIG

say "starting interlock (policy: one target, one agent with egress deny)"
"$BIN" --config "$WORK/interlock.yaml" run >"$WORK/interlock.log" 2>&1 &
INTERLOCK_PID=$!
for _ in $(seq 50); do
	"$BIN" --config "$WORK/interlock.yaml" status >/dev/null 2>&1 && grep -q "interlock running" "$WORK/interlock.log" && break
	sleep 0.1
done
if ! grep -q "interlock running" "$WORK/interlock.log"; then
	echo "interlock did not start:" >&2
	cat "$WORK/interlock.log" >&2
	exit 1
fi
"$BIN" --config "$WORK/interlock.yaml" status

say "the agent connects to 127.0.0.1:$PGPORT with psql, unaware of Interlock (and with no valid password)"
cat >"$AGENTDIR/agent.sh" <<AGENT
#!/bin/bash
echo "agent: pid \$\$, cgroup \$(cut -d: -f3 /proc/self/cgroup | tail -1)"
PGPASSWORD=not-the-password psql -X -h 127.0.0.1 -p $PGPORT -U agent -d postgres \\
  -c "select count(*) as orders, sum(amount) as total from orders" \\
  -c "drop table orders" \\
  -c "select 'still connected' as session"
for dst in 127.0.0.1/6379 ${METRICS%:*}/${METRICS#*:}; do
	echo -n "agent: connecting to \${dst/\//:} (not a target): "
	if (exec 3<>/dev/tcp/\$dst) 2>"$AGENTDIR/denied.txt"; then
		echo "connected (unexpected)"
	else
		sed 's/.*: //' "$AGENTDIR/denied.txt" | head -1
	fi
done
AGENT
chmod +x "$AGENTDIR/agent.sh"
"$BIN" --config "$WORK/interlock.yaml" exec --agent demo-agent --user nobody --parent /interlock-demo/agents -- "$AGENTDIR/agent.sh"

say "an approval round trip: the agent's DELETE waits until a human approves it"
cat >"$AGENTDIR/agent-delete.sh" <<AGENT
#!/bin/bash
PGPASSWORD=not-the-password psql -X -h 127.0.0.1 -p $PGPORT -U agent -d postgres -c "delete from orders where id = 5"
AGENT
chmod +x "$AGENTDIR/agent-delete.sh"
"$BIN" --config "$WORK/interlock.yaml" exec --agent demo-agent --user nobody --parent /interlock-demo/agents -- "$AGENTDIR/agent-delete.sh" &
AGENT_PID=$!
ID=""
for _ in $(seq 100); do
	ID=$("$BIN" --config "$WORK/interlock.yaml" approvals list -o json 2>/dev/null | sed -n 's/^    "id": "\([0-9a-f]*\)".*/\1/p' | head -1)
	[ -n "$ID" ] && break
	sleep 0.1
done
"$BIN" --config "$WORK/interlock.yaml" approvals list
echo "+ interlock approvals approve $ID --reason \"order 5 was a test\""
"$BIN" --config "$WORK/interlock.yaml" approvals approve "$ID" --reason "order 5 was a test"
wait $AGENT_PID
echo "orders left: $(runuser -u postgres -- psql -X -At -h "$WORK" -p $PGPORT -d postgres -c 'select count(*) from orders')"

say "what the engine saw"
grep -E 'session (start|end)|statement blocked|approval (requested|decided)' "$WORK/interlock.log" | sed 's/^time=[^ ]* //'
echo
echo "the table is still there: $(runuser -u postgres -- psql -X -At -h "$WORK" -p $PGPORT -d postgres -c 'select count(*) from orders') rows"

say "the tamper-evident recording"
"$BIN" --config "$WORK/interlock.yaml" sessions list
LAST=$("$BIN" --config "$WORK/interlock.yaml" sessions list -o json 2>/dev/null | sed -n 's/^ *"id": "\([0-9a-f]*\)".*/\1/p' | tail -1)
[ -n "$LAST" ] && "$BIN" --config "$WORK/interlock.yaml" replay "$LAST"
"$BIN" --config "$WORK/interlock.yaml" audit verify

say "metrics"
curl -s "http://$METRICS/metrics" | grep -E '^interlock_(connections_total|statements_total|approval_decisions_total\{outcome="approved"\}|kernel_verdicts_total\{verdict="(redirected|egress_denied|engine_port_denied)"\}|bytes_total)'
