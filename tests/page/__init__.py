"""The search page in a real headless Chromium."""
