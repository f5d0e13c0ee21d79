#!/bin/sh
# Node.js NODE_VERSION and npm NPM_VERSION into /usr/local, from the npm registry alone: the
# official Node binary is published there as node-linux-<arch>, npm as npm. Debian's own nodejs
# and npm (Node 18 in Debian 12, too old for Gemini CLI) serve only to fetch the two packages,
# with the registry the build was given (NPM_CONFIG_REGISTRY) and npm's integrity checks, and
# are removed afterwards.
set -eu
: "${NODE_VERSION:?}" "${NPM_VERSION:?}"

case "$(dpkg --print-architecture)" in
    amd64) arch=x64 ;;
    arm64) arch=arm64 ;;
    *) echo "install-node: no Node.js package for $(dpkg --print-architecture)" >&2; exit 1 ;;
esac

/usr/local/lib/ar-build/apt-install.sh nodejs npm
work="$(mktemp -d)"
cd "$work"
npm pack --silent "node-linux-${arch}@${NODE_VERSION}" "npm@${NPM_VERSION}" >/dev/null
DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq --auto-remove nodejs npm >/dev/null
rm -rf /usr/lib/node_modules /usr/share/nodejs /root/.npm

tar -xzf "node-linux-${arch}-${NODE_VERSION}.tgz" package/bin/node
install -m 0755 package/bin/node /usr/local/bin/node
mkdir -p /usr/local/lib/node_modules/npm
tar -xzf "npm-${NPM_VERSION}.tgz" --strip-components=1 -C /usr/local/lib/node_modules/npm
ln -sf ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm
ln -sf ../lib/node_modules/npm/bin/npx-cli.js /usr/local/bin/npx
hash -r  # the shell still remembers Debian's npm, just removed
cd /
rm -rf "$work"

[ "$(node --version)" = "v${NODE_VERSION}" ]
echo "install-node: node $(node --version), npm $(npm --version)"
