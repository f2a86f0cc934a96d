// Drive a REAL atproto OAuth client (@atproto/oauth-client-node, a loopback development
// client) against tinypds, signing in through the real consent page in headless Chromium.
// Usage: node run.mjs <json config>  with {pdsUrl, handle, password, plcUrl, outDir, chromium}
// Prints one JSON line of results on stdout; exits non-zero on failure.
import http from 'node:http'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { NodeOAuthClient } from '@atproto/oauth-client-node'
import { JoseKey } from '@atproto/jwk-jose'
import { chromium } from 'playwright-core'

const cfg = JSON.parse(process.argv[2])
const results = { steps: [] }
const step = (name, extra = {}) => { results.steps.push({ name, ...extra }); console.error('step:', name) }

// mode "loopback": a public development client; mode "confidential": cfg.clientMetadata (an
// https client_id, private_key_jwt) with cfg.privateJwk, its callback caught in the browser
const confidential = cfg.mode === 'confidential'

// the callback receiver on 127.0.0.1 (the spec's loopback redirect)
let onCallback
const callbackSeen = new Promise((resolve) => { onCallback = resolve })
const receiver = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://127.0.0.1')
  if (url.pathname !== '/callback') { res.writeHead(404).end(); return }
  res.writeHead(200, { 'content-type': 'text/plain' }).end('signed in; you can close this window')
  onCallback(url.searchParams)
})
await new Promise((r) => receiver.listen(0, '127.0.0.1', r))
const scope = 'atproto transition:generic'
const redirectUri = confidential ? cfg.clientMetadata.redirect_uris[0] : `http://127.0.0.1:${receiver.address().port}/callback`

const memory = () => { const m = new Map(); return { set: async (k, v) => { m.set(k, v) }, get: async (k) => m.get(k), del: async (k) => { m.delete(k) } } }
const loopbackMetadata = {
    client_id: `http://localhost?redirect_uri=${encodeURIComponent(redirectUri)}&scope=${encodeURIComponent(scope)}`,
    redirect_uris: [redirectUri],
    scope,
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    token_endpoint_auth_method: 'none',
    application_type: 'native',
    dpop_bound_access_tokens: true,
}
const client = new NodeOAuthClient({
  clientMetadata: confidential ? cfg.clientMetadata : loopbackMetadata,
  keyset: confidential ? [await JoseKey.fromImportable(cfg.privateJwk, cfg.privateJwk.kid)] : undefined,
  stateStore: memory(),
  sessionStore: memory(),
  handleResolver: cfg.pdsUrl,
  plcDirectoryUrl: cfg.plcUrl,
  allowHttp: true,
})

let browser
try {
  const authUrl = await client.authorize(cfg.handle, { scope })
  step('par', { authUrl: authUrl.toString() })

  browser = await chromium.launch({
    executablePath: cfg.chromium,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  })
  const page = await browser.newPage({ viewport: { width: 720, height: 900 } })
  if (confidential) { // the https redirect URI is not reachable here: note the browser going there
    page.on('request', (req) => {
      if (req.url().startsWith(redirectUri + '?')) onCallback(new URL(req.url()).searchParams)
    })
  }
  await page.goto(authUrl.toString())
  await page.screenshot({ path: join(cfg.outDir, `consent-page-${cfg.mode}.png`), fullPage: true })
  await page.getByLabel('Password').fill(cfg.password)
  await page.getByLabel('Remember this device').check()
  await page.screenshot({ path: join(cfg.outDir, `consent-page-${cfg.mode}-filled.png`), fullPage: true })
  await page.getByRole('button', { name: 'Allow' }).click()
  const params = await Promise.race([callbackSeen, new Promise((r) => setTimeout(r, 30000))])
  if (!params) {
    await page.screenshot({ path: join(cfg.outDir, `stuck-${cfg.mode}.png`), fullPage: true })
    throw new Error(`no callback within 30 s; the browser is at ${page.url()}`)
  }
  step('consent', { iss: params.get('iss'), hasCode: params.has('code') })

  const { session } = await client.callback(params)
  step('callback', { sub: session.did })

  const create = async (text) => {
    const res = await session.fetchHandler('/xrpc/com.atproto.repo.createRecord', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ repo: session.did, collection: 'app.bsky.feed.post',
        record: { $type: 'app.bsky.feed.post', text, createdAt: new Date().toISOString() } }),
    })
    return { status: res.status, body: await res.json() }
  }
  const first = await create('hello from a real OAuth client')
  step('createRecord', first)

  const before = await session.getTokenInfo(false)
  const after = await session.getTokenInfo(true) // forces a refresh
  step('refresh', { expiresBefore: before.expiresAt?.toISOString(), expiresAfter: after.expiresAt?.toISOString(), scope: after.scope })
  const second = await create('after a refresh')
  step('createRecordAfterRefresh', second)

  await session.signOut() // revocation at the authorization server
  const afterRevoke = await fetch(new URL('/xrpc/com.atproto.server.getSession', cfg.pdsUrl), { method: 'GET' })
  step('signOut', { anonymousStatus: afterRevoke.status })
  let restored = 'none'
  try { await client.restore(session.did); restored = 'restored' } catch (e) { restored = 'gone: ' + e.constructor.name }
  step('restoreAfterSignOut', { restored })
  results.ok = true
} catch (err) {
  results.ok = false
  const chain = []
  for (let e = err; e; e = e.cause) chain.push(String(e?.stack || e))
  results.error = chain.join('\ncaused by: ')
} finally {
  if (browser) await browser.close()
  receiver.close()
}
writeFileSync(join(cfg.outDir, `results-${cfg.mode}.json`), JSON.stringify(results, null, 2))
console.log(JSON.stringify(results))
process.exit(results.ok ? 0 : 1)
