"""The released loss groups at every shot count: runs whose scores the new rule reproduces get
its description and params key.

CGVST's loss is now the released ``mean(CE[:28]) + mean(CE[28:])`` in turns: the first four
user/assistant turns' targets, then the rest. The earlier rule (the turns before the last
demonstration, then the last demonstration and the query) gives the same two groups at 0, 1 and
5 shots, so those runs of the reference-rule gradient methods are re-described and re-keyed; at
other shot counts their scores differ, and they keep their old description and key (a new
ingest computes the new rule). Methods whose scores do not depend on the loss (``gv``'s single
group, the forward-only methods) are re-keyed at any shot count. ``lape`` runs of the earlier
formula keep their key: ``lape`` is now the released method, with a params key of its own.

Revision ID: 0006
Revises: 0005
"""

import hashlib
import json

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

OLD_LOSS = ("mean CE of the turns before the last demonstration + mean CE of the last "
            "demonstration and the query (an empty group left out); |.| per example, summed")
NEW_LOSS = ("mean CE of the first four user/assistant turns' targets + mean CE of the rest, "
            "as released (mean(CE[:28]) + mean(CE[28:]) on Llama-2-chat; an empty group "
            "contributes nothing); |.| per example, summed")
SAME_GROUPS_AT = (0, 1, 5)  # shot counts at which both rules give the same loss groups
NOT_IDENTITY = ("rule", "batch_size", "device", "versions")  # stored beside the identity


def _key(identity: dict) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:24]


def _rekeyable(identity: dict) -> bool:
    if identity.get("method") == "lape" or identity.get("prompt", {}).get("rule") != "reference":
        return False
    return identity.get("targets") != "reference" or identity.get("shots") in SAME_GROUPS_AT


def _rekey(old: str, new: str) -> None:
    conn = op.get_bind()
    rows = conn.exec_driver_sql("SELECT run_id, params, params_key FROM runs").fetchall()
    for run_id, params, key in rows:
        params = json.loads(params) if isinstance(params, str) else params
        identity = {k: v for k, v in (params or {}).items() if k not in NOT_IDENTITY}
        if identity.get("loss") != old or _key(identity) != key or not _rekeyable(identity):
            continue
        identity["loss"] = new
        params["loss"] = new
        conn.exec_driver_sql("UPDATE runs SET params = ?, params_key = ? WHERE run_id = ?",
                             (json.dumps(params), _key(identity), run_id))


def upgrade() -> None:
    _rekey(OLD_LOSS, NEW_LOSS)


def downgrade() -> None:
    _rekey(NEW_LOSS, OLD_LOSS)
