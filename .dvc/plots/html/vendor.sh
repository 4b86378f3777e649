#!/usr/bin/env bash
# Writes offline.html, the page that `dvc plots show` and `dvc plots diff` fill with the plots
# (plots.html_template in .dvc/config): DVC's own page loads vega, vega-lite and vega-embed from a
# CDN, so without a network its vega plots stay blank; this one carries their minified builds
# inline. The packages come from the npm registry (`npm pack` checks each tarball's integrity);
# their trailing source-map comments are dropped (no .map files ship). To move to other
# versions: change them here and in README.md, run `bash .dvc/plots/html/vendor.sh`, commit.
set -euo pipefail
cd "$(dirname "$0")"
packages=(vega@5.33.1 vega-lite@5.23.0 vega-embed@6.29.0)
files=(build/vega.min.js build/vega-lite.min.js build/vega-embed.min.js)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "${packages[@]}" >/dev/null)

inline() { # inline <name@version> <file in the package>: one <script> element
    local name=${1%@*} version=${1#*@} dir="$work/$1"
    mkdir -p "$dir"
    tar -xzf "$work/$name-$version.tgz" -C "$dir" "package/$2"
    if grep -qi '</script' "$dir/package/$2"; then
        echo "vendor.sh: $1 $2 holds '</script': it cannot be inlined" >&2
        exit 1
    fi
    printf '    <script>/* %s %s (BSD-3-Clause) */\n' "$1" "$2"
    grep -v '^//# sourceMappingURL=' "$dir/package/$2"
    printf '    </script>\n'
    sha256sum "$dir/package/$2" | sed "s|$dir/package/|$1 |" >&2
}

{
    cat <<'HEAD'
<!DOCTYPE html>
<html>
<head>
    <meta charset="utf-8">
    {refresh_tag}
    <title>DVC Plot</title>
    <!-- vega, vega-lite and vega-embed inline, so that the page works offline; see README.md
         in .dvc/plots/html/ (written by vendor.sh there). -->
HEAD
    for i in "${!packages[@]}"; do
        inline "${packages[$i]}" "${files[$i]}"
    done
    cat <<'TAIL'
    <style>
        table {
            border-spacing: 15px;
        }
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
TAIL
} > offline.html.tmp
mv offline.html.tmp offline.html
echo "vendor.sh: wrote $(wc -c < offline.html) bytes to .dvc/plots/html/offline.html" >&2
