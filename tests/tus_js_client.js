// Drives tus-js-client (installed from npm by tests/test_tus_clients.py) against a chunkd server.
//   node tus_js_client.js kill-at  '{"endpoint", "token", "file", "urlFile", "killAt"}'
//   node tus_js_client.js resume   '{"endpoint", "token", "file", "urlFile"}'
//   node tus_js_client.js parallel '{"endpoint", "token", "file", "parallel", "metadata"}'
// Prints {"url": ...} and exits 0 on success; exits 1 with the error on stderr otherwise.
'use strict';
const fs = require('fs');
const { Readable } = require('stream');
const tus = require('tus-js-client');

const [command, raw] = process.argv.slice(2);
const o = JSON.parse(raw);
const data = fs.readFileSync(o.file);

// A slow link: request bodies trickle out, so that "kill-at" reliably dies in the middle of a PATCH.
function trickle(buffer, piece, delayMs) {
  let position = 0;
  return new Readable({
    read() {
      if (position >= buffer.length) { this.push(null); return; }
      const chunk = buffer.subarray(position, position + piece);
      position += piece;
      setTimeout(() => this.push(chunk), delayMs);
    },
  });
}

class SlowLinkStack {
  constructor() { this.inner = new tus.DefaultHttpStack(); }
  createRequest(method, url) {
    const request = this.inner.createRequest(method, url);
    const send = request.send.bind(request);
    request.send = (body) => send(body && body.length ? trickle(body, 64 * 1024, 5) : body);
    return request;
  }
  getName() { return 'SlowLinkStack'; }
}

let upload;
const options = {
  endpoint: o.endpoint,
  headers: { Authorization: `Bearer ${o.token}` },
  metadata: o.metadata || {},
  retryDelays: [0, 250, 1000],
  onError(error) { console.error(`upload failed: ${error}`); process.exit(1); },
  onSuccess() { console.log(JSON.stringify({ url: upload.url })); process.exit(0); },
};

if (command === 'kill-at') {
  Object.assign(options, {
    httpStack: new SlowLinkStack(), // the whole file in one PATCH, cut off by the kill
    onUploadUrlAvailable() { fs.writeFileSync(o.urlFile, upload.url); },
    onProgress(sent) { if (sent >= o.killAt) process.kill(process.pid, 'SIGKILL'); },
  });
  upload = new tus.Upload(data, options);
} else if (command === 'resume') {
  options.uploadUrl = fs.readFileSync(o.urlFile, 'utf8');
  upload = new tus.Upload(data, options);
} else if (command === 'parallel') {
  options.parallelUploads = o.parallel;
  upload = new tus.Upload(data, options);
} else {
  console.error(`unknown command ${command}`);
  process.exit(2);
}
upload.start();
