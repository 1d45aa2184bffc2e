#!/usr/bin/env bash
# ansible-test sanity on the collection as `ansible-galaxy collection build` packages it,
# installed under build/sanity/ansible_collections/aios/platform (ansible-test needs that
# path and a git work tree). No ignore file: every finding fails.
set -euo pipefail
cd "$(dirname "$0")/.."
bin="$PWD/.venv/bin"
root="$PWD/build/sanity"
rm -rf "$root" build/dist
"$bin/ansible-galaxy" collection build --output-path build/dist --force >/dev/null
"$bin/ansible-galaxy" collection install -p "$root" build/dist/aios-platform-*.tar.gz --no-deps --force >/dev/null
# ansible-test downloads a pip bootstrap script from a host CI cannot reach; put ours in
# its cache under the name of the pip version this ansible-test bootstraps.
pip_version=$("$bin/python" -c 'import re, ansible_test, pathlib; print(re.search(r"pip=.([0-9.]+).", (pathlib.Path(ansible_test.__file__).parent / "_internal/python_requirements.py").read_text()).group(1))')
mkdir -p "$HOME/.ansible/test/cache"
cp scripts/get_pip_offline.py "$HOME/.ansible/test/cache/get_pip_${pip_version//./_}.py"
cd "$root/ansible_collections/aios/platform"
git init -q && git add -A && git -c user.name=sanity -c user.email=sanity@localhost commit -qm sanity
PATH="$bin:$PATH" "$bin/ansible-test" sanity --python 3.11 --color no "$@"
