"""`python -m services.routing`: run the routing service, configured by environment variables.

`python -m services.routing migrate`: upgrade the records an earlier release stored, once, then exit
(see `services.routing.migration`).
"""

import argparse
import asyncio

from services.routing.bootstrap import build_app
from services.routing.migration import migrate
from services.routing.settings import RoutingSettings
from shared.app import serve

parser = argparse.ArgumentParser(prog="python -m services.routing", description="Run the routing service.")
parser.add_argument(
    "command", nargs="?", choices=["migrate"],
    help="migrate: upgrade agents and tickets stored by the walking skeleton, then exit",
)
command = parser.parse_args().command
settings = RoutingSettings()
if command == "migrate":
    upgraded = asyncio.run(migrate(settings))
    print(f"routing: upgraded {upgraded} agents and tickets stored by an earlier release")
else:
    serve(build_app(settings), settings)
