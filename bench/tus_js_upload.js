// One tus-js-client upload for bench/compare.py, timed by the client itself (node's start-up and the
// file's read are not part of it).
//   node tus_js_upload.js '{"endpoint", "token"?, "file", "chunkSize"?, "parallel"?}'
// Prints {"url", "started", "finished"} (epoch milliseconds) and exits 0; exits 1 with the error on stderr.
'use strict';
const fs = require('fs');
const tus = require('tus-js-client');

const o = JSON.parse(process.argv[2]);
const data = fs.readFileSync(o.file);
const options = {
  endpoint: o.endpoint,
  headers: o.token ? { Authorization: `Bearer ${o.token}` } : {},
  metadata: { filename: 'bench.bin', filetype: 'application/octet-stream' },
  retryDelays: [],
  onError(error) { console.error(`upload failed: ${error}`); process.exit(1); },
  onSuccess() {
    console.log(JSON.stringify({ url: upload.url, started, finished: Date.now() }));
    process.exit(0);
  },
};
if (o.chunkSize) options.chunkSize = o.chunkSize;
if (o.parallel) options.parallelUploads = o.parallel;
const upload = new tus.Upload(data, options);
const started = Date.now();
upload.start();
