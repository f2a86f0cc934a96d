// A stand-in for Bluesky's video service (video.bsky.app) on 127.0.0.1, for
// tests/integration/test_video_upload.py. It does what the real one does with a PDS:
//  - app.bsky.video.getUploadLimits: a service-auth token with aud = did:web:video.bsky.app,
//    lxm = app.bsky.video.getUploadLimits, checked with @atproto/xrpc-server's verifyJwt
//    against the issuer's DID document (resolved from the PLC directory);
//  - app.bsky.video.uploadVideo?did=...&name=...: the body is the video, the token is the one
//    the app got for the PDS (aud = the PDS's service DID, lxm = com.atproto.repo.uploadBlob);
//    the stand-in checks it the same way, spools the video to disk, "processes" it (unchanged)
//    and uploads it back to the account's PDS (from the DID document) with that same token,
//    twice (a retry must work while the token is valid); it answers a completed jobStatus.
// Usage: node server.mjs <plcUrl> <workDir>; prints "listening <port>" on stdout.
import http from 'node:http'
import { createReadStream, createWriteStream, statSync, unlinkSync } from 'node:fs'
import { join } from 'node:path'
import { pipeline } from 'node:stream/promises'
import { Readable } from 'node:stream'
import { verifyJwt } from '@atproto/xrpc-server'
import { IdResolver, getPds } from '@atproto/identity'

const [plcUrl, workDir] = process.argv.slice(2)
const SERVICE_DID = 'did:web:video.bsky.app'
const idResolver = new IdResolver({ plcUrl, fetch: globalThis.fetch }) // plain fetch: the PLC is on loopback (the default refuses http and private addresses)
const getSigningKey = async (iss, forceRefresh) => {
  const did = iss.split('#')[0]
  const atp = await idResolver.did.resolveAtprotoData(did, forceRefresh)
  return atp.signingKey
}
const log = (...a) => console.error('video-standin:', ...a)

const send = (res, status, body) => {
  res.writeHead(status, { 'content-type': 'application/json' })
  res.end(JSON.stringify(body))
}
const bearer = (req) => {
  const h = req.headers.authorization || ''
  return h.startsWith('Bearer ') ? h.slice(7).trim() : null
}

async function uploadLimits (req, res) {
  const payload = await verifyJwt(bearer(req), SERVICE_DID, 'app.bsky.video.getUploadLimits', getSigningKey)
  log('getUploadLimits for', payload.iss)
  send(res, 200, { canUpload: true, remainingDailyVideos: 25, remainingDailyBytes: 10 * 1024 ** 3 })
}

async function uploadVideo (req, res, url) {
  const token = bearer(req)
  const did = url.searchParams.get('did')
  const doc = await idResolver.did.resolve(did, true)
  // the token the app minted for its PDS: checked against the PDS's service DID, for uploadBlob
  const payload = await verifyJwt(token, null, 'com.atproto.repo.uploadBlob', getSigningKey)
  if (payload.iss !== did) throw Object.assign(new Error('token is not from the uploading account'), { status: 401 })
  const pds = getPds(doc)
  const host = new URL(pds).host // the app names the PDS did:web:<host>; a port's ':' may be %3A-encoded
  if (![`did:web:${host}`, `did:web:${host.replace(':', '%3A')}`].includes(payload.aud)) {
    throw Object.assign(new Error(`token audience ${payload.aud} is not the PDS of ${did}`), { status: 401 })
  }
  const path = join(workDir, `video-${Date.now()}-${Math.random().toString(36).slice(2)}.mp4`)
  await pipeline(req, createWriteStream(path)) // spooled, never held in memory
  const size = statSync(path).size
  log('received', size, 'bytes from', did, '; uploading back to', pds)
  try {
    let blob
    for (const attempt of [1, 2]) { // the second is a retry with the same token
      const r = await fetch(`${pds}/xrpc/com.atproto.repo.uploadBlob`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'video/mp4', 'content-length': String(size) },
        body: Readable.toWeb(createReadStream(path)),
        duplex: 'half',
      })
      const body = await r.json()
      if (r.status !== 200) throw Object.assign(new Error(`PDS refused upload ${attempt}: ${r.status} ${JSON.stringify(body)}`), { status: 502 })
      blob = body.blob
    }
    send(res, 200, { jobStatus: { jobId: 'job-' + Date.now(), did, state: 'JOB_STATE_COMPLETED', progress: 100, blob } })
  } finally {
    unlinkSync(path)
  }
}

const server = http.createServer(async (req, res) => {
  const url = new URL(req.url, 'http://127.0.0.1')
  try {
    if (req.method === 'GET' && url.pathname === '/xrpc/app.bsky.video.getUploadLimits') return await uploadLimits(req, res)
    if (req.method === 'POST' && url.pathname === '/xrpc/app.bsky.video.uploadVideo') return await uploadVideo(req, res, url)
    send(res, 404, { error: 'MethodNotImplemented', message: url.pathname })
  } catch (err) {
    log('error:', err.message)
    req.resume()
    send(res, err.status || 401, { error: err.error || 'AuthenticationRequired', message: String(err.message) })
  }
})
server.listen(0, '127.0.0.1', () => console.log('listening', server.address().port))
