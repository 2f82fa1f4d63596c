#!/usr/bin/env bash
# Installs the Debian packages the test suite uses, when this is root on a Debian machine.
# Missing packages are not fatal: the tests that need them skip and print why.
set -u
# docker.io (dockerd and the client that speaks BuildKit without buildx) and debootstrap: the
# image tests (tests/deploy/test_image.py) build and run the image on a private daemon.
packages=(g++ make prometheus docker-compose docker.io debootstrap ffmpeg
          redis-server postgresql chromium)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "not root or no apt-get: skipping system packages ${missing[*]} (tests that need them will skip)"
  exit 0
fi
echo "installing system packages: ${missing[*]}"
apt-get update -qq >/dev/null && \
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || \
  echo "apt-get could not install ${missing[*]} (tests that need them will skip)"
exit 0
