"""Whole studies through the CLI on real vLLM engines, and what is read from them (confirm,
export)."""
