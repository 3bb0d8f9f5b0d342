"""`python -m services.notify`: run the notify service, configured by environment variables."""

import sys

from services.notify.bootstrap import build_app
from services.notify.settings import NotifySettings
from shared.app import serve
from shared.rules_file import RulesFileError

settings = NotifySettings()
try:
    app = build_app(settings)
except RulesFileError as invalid:
    print(f"notify cannot start: invalid notification rules: {invalid}", file=sys.stderr)
    sys.exit(2)
serve(app, settings)
