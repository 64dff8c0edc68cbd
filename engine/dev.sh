#!/usr/bin/env bash
# Write or change a patch to libunftp (engine/README.md).
#
#   engine/dev.sh checkout [NNNN]
#       engine/work/libunftp becomes a git repository: pristine libunftp, then
#       one commit per patch (only those sorting before NNNN, when given, so
#       that patch NNNN can be rewritten).
#   engine/dev.sh save NNNN-short-name
#       the uncommitted changes there become engine/patches/NNNN-short-name.patch
#       (the header of an existing file is kept) and are committed there, so
#       the next patch builds on it.
set -euo pipefail

engine=$(cd "$(dirname "$0")" && pwd)
work="$engine/work/libunftp"
name=$(sed -n 's/^const UPSTREAM_NAME: &str = "\(.*\)";$/\1/p' "$engine/build.rs")
version=$(sed -n 's/^const UPSTREAM_VERSION: &str = "\(.*\)";$/\1/p' "$engine/build.rs")

die() { echo "dev.sh: $*" >&2; exit 1; }

in_work() {
    git -C "$work" -c user.name=engine-dev -c user.email=engine-dev@localhost \
        -c core.autocrlf=false -c commit.gpgsign=false "$@"
}

# The pristine crate, where cargo unpacked it (the build does the same).
upstream() {
    local dir
    for dir in "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/"$name-$version"; do
        if [ -f "$dir/src/lib.rs" ]; then echo "$dir"; return; fi
    done
    (cd "$engine" && cargo fetch >/dev/null 2>&1 || true)
    cargo metadata --format-version 1 --manifest-path "$engine/Cargo.toml" 2>/dev/null |
        python3 -c "import json,os,sys; print(next(os.path.dirname(p['manifest_path']) for p in json.load(sys.stdin)['packages'] if p['name']=='$name' and p['version']=='$version'))" ||
        die "cannot find the sources of $name $version (run cargo fetch)"
}

checkout() {
    local upto=${1:-} src patch base
    if [ -d "$work/.git" ] && [ -n "$(in_work status --porcelain)" ]; then
        die "engine/work/libunftp has uncommitted changes: save them (dev.sh save NNNN-name) or delete the directory"
    fi
    src=$(upstream)
    rm -rf "$work"
    mkdir -p "$work"
    cp -R "$src/src" "$src/Cargo.toml" "$work/"
    chmod -R u+w "$work"
    # Its own workspace, so `cargo check` works in there too.
    printf '\n[workspace]\n' >>"$work/Cargo.toml"
    in_work init -q
    in_work add -A
    in_work commit -q -m "$name $version, pristine (crates.io)"
    for patch in "$engine"/patches/*.patch; do
        [ -e "$patch" ] || continue
        base=$(basename "$patch" .patch)
        if [ -n "$upto" ] && [[ ! "$base" < "$upto" ]]; then break; fi
        in_work apply --whitespace=nowarn "$patch" || die "$base does not apply: rewrite it (dev.sh checkout ${base%%-*})"
        in_work add -A
        in_work commit -q -m "$base"
    done
    echo "engine/work/libunftp: $name $version + $(($(in_work rev-list --count HEAD) - 1)) patches"
}

save() {
    local patch_name=${1:-} target header diff
    [[ "$patch_name" =~ ^[0-9]{4}-[a-z0-9-]+$ ]] || die "usage: dev.sh save NNNN-short-name (e.g. 0042-rest-cleared-after-transfer)"
    [ -d "$work/.git" ] || die "no working copy: run dev.sh checkout first"
    target="$engine/patches/$patch_name.patch"
    in_work add -A src
    diff=$(in_work diff --cached --no-color --no-ext-diff --src-prefix=a/ --dst-prefix=b/ HEAD -- src)
    [ -n "$diff" ] || die "nothing changed under engine/work/libunftp/src"
    if [ -f "$target" ]; then
        header=$(sed '/^diff --git /,$d' "$target")
    else
        header="Defect: what a client sees (the bug, as measured).
Fix: what the patch changes, and why this way.
Standard: RFC and section, or the behaviour restored.
Test: tests/it/engine.rs, the test that fails without this patch.
"
    fi
    printf '%s\n\n%s\n' "$header" "$diff" >"$target"
    in_work commit -q -m "$patch_name"
    echo "wrote engine/patches/$patch_name.patch; check with: cargo build"
}

case "${1:-}" in
    checkout) shift; checkout "$@" ;;
    save) shift; save "$@" ;;
    *) sed -n '2,12p' "$0"; exit 2 ;;
esac
