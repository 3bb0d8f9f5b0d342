"""`python -m services.sla`: run the SLA service, configured by environment variables."""

import sys

from services.sla.bootstrap import build_app
from services.sla.settings import SlaSettings
from shared.app import serve
from shared.rules_file import RulesFileError

settings = SlaSettings()
try:
    app = build_app(settings)
except RulesFileError as invalid:
    print(f"sla cannot start: invalid SLA policy file: {invalid}", file=sys.stderr)
    sys.exit(2)
serve(app, settings)
