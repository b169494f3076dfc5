# Sourced by scripts/wheel.sh and tests/install/run.sh: the Debian archive this machine's apt
# uses, and its release's codename.
debian_mirror() { # suffix: "" for the archive, "-security" for security updates
  { grep -rhoP '^(URIs:\s*|deb\s+(\[[^]]*\]\s+)?)\Khttps?://\S+' \
      /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null || true; } | grep -m1 "/debian$1/*\$"
}
debian_codename() { (. /etc/os-release && echo "$VERSION_CODENAME"); }
