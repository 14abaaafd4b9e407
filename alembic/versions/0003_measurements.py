"""every measurement of a trial (repeats, windows, disturbances)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27 14:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("autotune_trials") as batch_op:
        batch_op.add_column(sa.Column("measurements", sa.JSON(), nullable=True))
        batch_op.add_column(
            sa.Column("disturbed", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("autotune_trials") as batch_op:
        batch_op.drop_column("disturbed")
        batch_op.drop_column("measurements")
