// W10's peer: @tus/server, the tus project's Node server, on its file store or its S3
// store, as its README sets it up (bench/tus.py starts it).
//
//   node server.mjs file PORT DIRECTORY
//   node server.mjs s3 PORT   (TUS_S3_ENDPOINT, TUS_S3_BUCKET, TUS_S3_REGION,
//                              TUS_S3_ACCESS_KEY_ID, TUS_S3_SECRET_ACCESS_KEY)
//
// Uploads live under /files/; GET /healthz answers 200 once it listens.
import http from 'node:http'

import { FileStore } from '@tus/file-store'
import { S3Store } from '@tus/s3-store'
import { Server } from '@tus/server'

const [kind, port, directory] = process.argv.slice(2)

function store() {
  if (kind === 'file' && directory) {
    return new FileStore({ directory })
  }
  if (kind === 's3') {
    const env = process.env
    return new S3Store({
      partSize: 8 * 1024 * 1024, // the benchmark's chunk size, and the store's default
      s3ClientConfig: {
        bucket: env.TUS_S3_BUCKET,
        region: env.TUS_S3_REGION ?? 'us-east-1',
        endpoint: env.TUS_S3_ENDPOINT,
        forcePathStyle: true,
        credentials: {
          accessKeyId: env.TUS_S3_ACCESS_KEY_ID,
          secretAccessKey: env.TUS_S3_SECRET_ACCESS_KEY,
        },
      },
    })
  }
  console.error('usage: node server.mjs file PORT DIRECTORY | node server.mjs s3 PORT')
  process.exit(2)
}

const tus = new Server({ path: '/files', datastore: store(), relativeLocation: true })

const server = http.createServer((req, res) => {
  if (req.method === 'GET' && req.url === '/healthz') {
    res.writeHead(200, { 'Content-Type': 'text/plain' }).end('ok')
    return
  }
  tus.handle(req, res)
})
server.listen(Number(port), '127.0.0.1', () => {
  console.log(`@tus/server (${kind} store) listening on 127.0.0.1:${port}`)
})
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => process.exit(0)) // keep-alive connections would hold close()
}
