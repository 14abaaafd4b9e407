"""trial budget on studies, retry origin on trials

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 14:15:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("autotune_studies") as batch_op:
        batch_op.add_column(sa.Column("trial_budget", sa.Integer(), nullable=True))
    with op.batch_alter_table("autotune_trials") as batch_op:
        batch_op.add_column(sa.Column("retry_of", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("autotune_trials") as batch_op:
        batch_op.drop_column("retry_of")
    with op.batch_alter_table("autotune_studies") as batch_op:
        batch_op.drop_column("trial_budget")
