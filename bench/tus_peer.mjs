// The reference server for bench/compare.py: @tus/server with @tus/file-store, as its README sets it up.
//   node tus_peer.mjs NODE_MODULES DIRECTORY PORT
// The packages are ESM-only, and ESM ignores NODE_PATH: they are imported by their resolved paths.
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';

const [nodeModules, directory, port] = process.argv.slice(2);
const require = createRequire(`${nodeModules}/`);
const load = (name) => import(pathToFileURL(require.resolve(name)).href);
const { Server } = await load('@tus/server');
const { FileStore } = await load('@tus/file-store');

const server = new Server({ path: '/files', datastore: new FileStore({ directory }) });
server.listen({ host: '127.0.0.1', port: Number(port) }, () => console.log(`listening on ${port}`));
