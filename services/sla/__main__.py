"""`python -m services.sla`: run the SLA service, configured by environment variables."""

import sys

from services.sla.bootstrap import build_app
from services.sla.policy import PolicyFileError
from services.sla.settings import SlaSettings
from shared.app import serve

settings = SlaSettings()
try:
    app = build_app(settings)
except PolicyFileError as error:
    print(f"sla: refusing to start: invalid SLA policy file: {error}", file=sys.stderr)
    sys.exit(2)
serve(app, settings)
