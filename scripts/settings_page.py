"""Print the settings page, generated from ``tts-shim serve``'s options.

    python scripts/settings_page.py > docs/settings.md

tests/shim/test_cli.py fails when the committed page differs from what this prints.
"""

from shim.cli import settings_page

if __name__ == "__main__":
    print(settings_page(), end="")
