"""`python -m services.intake`: run the intake service, configured by environment variables."""

import sys

from services.intake.bootstrap import build_app
from services.intake.settings import IntakeSettings
from shared.app import serve
from shared.rules_file import RulesFileError

settings = IntakeSettings()
try:
    app = build_app(settings)
except RulesFileError as invalid:
    print(f"intake cannot start: invalid triage rules: {invalid}", file=sys.stderr)
    sys.exit(2)
serve(app, settings)
