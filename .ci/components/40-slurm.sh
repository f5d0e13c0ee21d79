#!/usr/bin/env bash
# A real Slurm cluster with accounting on this host: munge, MariaDB, slurmdbd, slurmctld and four
# slurmd as simulated nodes n[1-4] (127.0.0.1, ports 17001-17004, 2 count-only GPUs each).
# Idempotent: installs what is missing, starts what is not running, then waits until all nodes are idle.
set -euo pipefail
cd "$(dirname "$0")/../.."
export DEBIAN_FRONTEND=noninteractive
CONF=.ci/slurm
RUN=/tmp/slurm-ci

if ! command -v slurmctld >/dev/null || ! command -v slurmdbd >/dev/null || ! command -v mariadbd >/dev/null \
    || ! command -v munged >/dev/null; then
    apt-get install -y -qq --no-install-recommends slurm-wlm slurm-client slurmdbd munge mariadb-server >/dev/null
fi

mkdir -p "$RUN/state" /etc/slurm /run/munge /run/mysqld
for n in 1 2 3 4; do mkdir -p "$RUN/spool-n$n"; done
for g in 0 1; do [ -c "$RUN/gpu$g" ] || mknod -m 666 "$RUN/gpu$g" c 1 3; done
install -m 644 "$CONF/slurm.conf" /etc/slurm/slurm.conf
install -m 644 "$CONF/gres.conf" /etc/slurm/gres.conf
install -m 600 "$CONF/slurmdbd.conf" /etc/slurm/slurmdbd.conf
# Simulated node names resolve to this host, so MASTER_ADDR of a multi-node job is reachable.
grep -q '^127.0.0.1 n1 n2 n3 n4$' /etc/hosts || echo '127.0.0.1 n1 n2 n3 n4' >>/etc/hosts

wait_for() {  # wait_for SECONDS WHAT COMMAND...
    local limit=$1 what=$2
    shift 2
    for _ in $(seq $((limit * 5))); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.2
    done
    echo "40-slurm: $what did not come up within ${limit}s" >&2
    return 1
}

# munge
if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
fi
chown munge:munge /etc/munge/munge.key /run/munge && chmod 400 /etc/munge/munge.key
if ! pgrep -x munged >/dev/null; then
    runuser -u munge -- /usr/sbin/munged
fi
wait_for 10 munge bash -c 'munge -n | unmunge'

# MariaDB for accounting
chown mysql:mysql /run/mysqld
if ! pgrep -x mariadbd >/dev/null; then
    (mariadbd --user=mysql --skip-networking=0 --bind-address=127.0.0.1 >/tmp/slurm-ci/mariadb.log 2>&1 &)
fi
wait_for 30 mariadb mariadb -e 'SELECT 1'
mariadb -e "CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm-ci';
            GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"

# slurmdbd, then the cluster record, then the controller and the nodes
if ! pgrep -x slurmdbd >/dev/null; then
    slurmdbd
fi
wait_for 30 slurmdbd sacctmgr -n list cluster
sacctmgr -i -n list cluster format=cluster | grep -qw ci || sacctmgr -i add cluster ci >/dev/null
if ! pgrep -x slurmctld >/dev/null; then
    slurmctld
fi
wait_for 30 slurmctld scontrol ping
for n in 1 2 3 4; do
    if ! pgrep -f "^slurmd -N n$n\$" >/dev/null; then
        (slurmd -N "n$n" >/dev/null 2>&1 &)
    fi
done
# Nodes left down or drained by an earlier run (tests take nodes down on purpose) come back.
scontrol update nodename=n[1-4] state=resume >/dev/null 2>&1 || true
wait_for 60 "four idle nodes" bash -c '[ "$(sinfo -h -N -r -t idle -o %N | sort -u | wc -l)" -eq 4 ]'
sinfo -N
