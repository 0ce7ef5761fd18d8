import { X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as tlsConnect, rootCertificates } from 'node:tls';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { startSoapProxy } from './helpers/soap-proxy.js';
import { type Vcsim, checkVcsimTls, startVcsim } from './helpers/vcsim.js';

// The suite runs under Node.js 20 and 24 (scripts/run-tests.sh). Node 24's
// OpenSSL refuses keys that Node 20's accepts (security level 2: no RSA keys
// under 2048 bits), so these checks hold the simulator to level 2 under both.

/** Whether `version` (x.y.z) satisfies a range made of `^x`, `^x.y` or `^x.y.z` alternatives. */
function satisfiesCaret(version: string, range: string): boolean {
  const [major, minor, patch] = version.split('.').map(Number) as [number, number, number];
  return range.split('||').some((alternative) => {
    const m = /^\^(\d+)(?:\.(\d+))?(?:\.(\d+))?$/.exec(alternative.trim());
    if (!m) throw new Error(`engines.node alternative "${alternative.trim()}" is not a caret range`);
    const [wantMajor, wantMinor, wantPatch] = [Number(m[1]), Number(m[2] ?? 0), Number(m[3] ?? 0)];
    if (major !== wantMajor) return false;
    return minor !== wantMinor ? minor > wantMinor : patch >= wantPatch;
  });
}

describe('Node.js versions', () => {
  let sim: Vcsim;
  let wrongCa: string;
  beforeAll(async () => {
    sim = await startVcsim({ dc: 1, cluster: 0, host: 1, vm: 1 });
    // A CA that did not sign the simulator's certificate.
    wrongCa = join(mkdtempSync(join(tmpdir(), 'virt-graph-wrong-ca-')), 'ca.pem');
    writeFileSync(wrongCa, rootCertificates[0]!);
  });
  afterAll(() => sim?.stop());

  it("runs on a Node.js that package.json's engines allow, and they allow 20, 22 and 24", () => {
    const { engines } = JSON.parse(readFileSync('package.json', 'utf8')) as { engines: { node: string } };
    expect(satisfiesCaret(process.versions.node, engines.node)).toBe(true);
    for (const v of ['20.19.0', '22.12.0', '24.0.0']) expect(satisfiesCaret(v, engines.node)).toBe(true);
  });

  it('serves the simulator with a strong key for 127.0.0.1, accepted at OpenSSL security level 2', async () => {
    const pem = readFileSync(sim.certFile, 'utf8');
    const cert = new X509Certificate(pem);
    const details = cert.publicKey.asymmetricKeyDetails ?? {};
    if (cert.publicKey.asymmetricKeyType === 'rsa') expect(details.modulusLength).toBeGreaterThanOrEqual(2048);
    else expect(cert.publicKey.asymmetricKeyType === 'ec' && details.namedCurve).toBe('prime256v1');
    expect(cert.checkIP('127.0.0.1')).toBe('127.0.0.1');
    expect(new Date(cert.validTo).getTime()).toBeGreaterThan(Date.now() + 7 * 24 * 3600_000);

    // Level 2 asked for explicitly: Node 20 defaults to level 1, Node 24 to 2.
    const { port } = new URL(sim.url);
    const protocol = await new Promise<string | null>((resolve, reject) => {
      const socket = tlsConnect({ host: '127.0.0.1', port: Number(port), ca: pem, ciphers: 'DEFAULT@SECLEVEL=2' });
      socket.once('error', reject);
      socket.once('secureConnect', () => {
        resolve(socket.getProtocol());
        socket.end();
      });
    });
    expect(protocol).toMatch(/^TLSv1\.[23]$/);
  });

  it('serves the same certificate when a simulator is started again on the port of a stopped one', async () => {
    const first = await startVcsim({ dc: 1, cluster: 0, host: 1, vm: 1 });
    await first.stop();
    const again = await startVcsim({ dc: 1, cluster: 0, host: 1, vm: 1, port: first.port });
    try {
      expect(readFileSync(again.certFile, 'utf8')).toBe(readFileSync(first.certFile, 'utf8'));
    } finally {
      await again.stop();
    }
  });

  it('fails a test that cannot reach the simulator over TLS with a message that says why', async () => {
    await expect(checkVcsimTls(sim.url, wrongCa)).rejects.toThrow(
      new RegExp(
        `^cannot reach the vCenter simulator at ${sim.url.replace(/[.]/g, '\\.')} over TLS from Node\\.js ${process.version.replace(/[.]/g, '\\.')} \\(OpenSSL [^)]+\\): .*certificate`,
      ),
    );
    await expect(checkVcsimTls(sim.url, join(tmpdir(), 'virt-graph-no-such-cert.pem'))).rejects.toThrow(
      /^cannot read the simulator's certificate .*virt-graph-no-such-cert\.pem: .*ENOENT/,
    );
    await expect(startSoapProxy(sim.url, wrongCa)).rejects.toThrow(
      /^the SOAP proxy cannot reach the simulator at https:\/\/127\.0\.0\.1:\d+\/sdk: .*certificate/,
    );
  });

  it('answers 502 naming the cause when the SOAP proxy loses the simulator, without unhandled rejections', async () => {
    const gone = await startVcsim({ dc: 1, cluster: 0, host: 1, vm: 1 });
    const proxy = await startSoapProxy(gone.url, gone.certFile);
    try {
      await gone.stop();
      const res = await fetch(proxy.url, { method: 'POST', headers: { 'content-type': 'text/xml' }, body: '<x/>' });
      expect(res.status).toBe(502);
      expect(await res.text()).toMatch(/^soap-proxy: cannot relay to https:\/\/127\.0\.0\.1:\d+\/sdk: /);
      expect(proxy.errors()).toHaveLength(1);
    } finally {
      await proxy.close();
    }
  });
});
