"""Write the OpenAPI documents of the policy runtime and the NuNet plugin as JSON files.

The documentation site renders its HTTP API reference from these files, so the reference
is always the one the code serves. The apps are built, never started: no database, DMS or
network is needed. The runtime is built with every run mode, so every route it can serve
is documented; the plugin is built as its TCP listener (with the bearer-token check).

    python scripts/export_openapi.py DEST_DIR

writes DEST_DIR/policy-runtime.json and DEST_DIR/nunet-plugin.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

# A placeholder: building an app requires a token, and the document does not contain it.
_EXPORT_TOKEN = "openapi-export"  # noqa: S105 (a placeholder, not a credential)


def policy_runtime_openapi() -> dict[str, Any]:
    from policy_runtime.api.app import create_app
    from policy_runtime.config import RunMode, Settings

    settings = Settings(api_token=_EXPORT_TOKEN, run_modes=list(RunMode))
    return create_app(settings).openapi()


def nunet_plugin_openapi() -> dict[str, Any]:
    from interlink_nunet.app import create_app
    from interlink_nunet.config import Settings
    from interlink_nunet.server import build

    # The provider opens its job-mapping store when built; a throw-away one is enough.
    with tempfile.TemporaryDirectory() as scratch:
        settings = Settings(api_token=_EXPORT_TOKEN, store_path=Path(scratch) / "jobs.sqlite")
        provider = build(settings)
        try:
            return create_app(provider, _EXPORT_TOKEN).openapi()
        finally:
            provider.dms.close()
            provider.store.close()


DOCUMENTS = {
    "policy-runtime.json": policy_runtime_openapi,
    "nunet-plugin.json": nunet_plugin_openapi,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dest", type=Path, help="directory to write the JSON files to")
    args = parser.parse_args()
    args.dest.mkdir(parents=True, exist_ok=True)
    for name, export in DOCUMENTS.items():
        document = export()
        (args.dest / name).write_text(json.dumps(document, indent=2, sort_keys=True) + "\n",
                                      encoding="utf-8")
        print(f"{args.dest / name}: {len(document.get('paths', {}))} paths")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
