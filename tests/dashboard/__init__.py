"""Tests of autotune.dashboard: its JSON API, pages and figures in headless Chromium, the live
view."""
