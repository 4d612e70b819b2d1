import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { MaxwellError } from "../../src/protocol/mod.js";
import { durabilityOf, findNatsServer, parseServerVersion, renderServerConfig, supportsSyncAlways } from "../../src/transport/nats-server.js";

describe("embedded nats-server", () => {
  it("says exactly how to install nats-server when it is missing", () => {
    let error: unknown;
    try {
      findNatsServer({ PATH: "/nonexistent", MAXWELL_NATS_SERVER: "" }, []);
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(MaxwellError);
    const message = (error as MaxwellError).message;
    expect(message).toMatch(/apt-get install nats-server/);
    expect(message).toMatch(/brew install nats-server/);
    expect(message).toMatch(/docker run/);
    expect((error as MaxwellError).code).toBe("unavailable");
  });

  it("uses MAXWELL_NATS_SERVER when set, and refuses one that does not exist", () => {
    const dir = mkdtempSync(join(tmpdir(), "mx-bin-"));
    const bin = join(dir, "nats-server");
    writeFileSync(bin, "");
    expect(findNatsServer({ MAXWELL_NATS_SERVER: bin })).toBe(bin);
    expect(() => findNatsServer({ MAXWELL_NATS_SERVER: join(dir, "missing") })).toThrow(/does not exist/);
    rmSync(dir, { recursive: true });
  });

  it("offers fsync-always only from nats-server 2.10, and says which guarantee is in force", () => {
    const old = parseServerVersion("nats-server: v2.9.10");
    const current = parseServerVersion("2.10.4");
    expect(supportsSyncAlways(old)).toBe(false);
    expect(supportsSyncAlways(current)).toBe(true);
    expect(durabilityOf(old, true).mode).toBe("os-buffered");
    expect(durabilityOf(old, true).guarantee).toMatch(/60 s/);
    expect(durabilityOf(current, true).mode).toBe("strict");
    const config = (syncAlways: boolean) =>
      renderServerConfig({ host: "127.0.0.1", port: -1, storeDir: "/s", operatorJwt: "o", systemAccount: "S", accounts: { S: "j" }, syncAlways, maxPayload: 1 });
    expect(config(true)).toMatch(/sync_interval: always/);
    expect(config(false)).not.toMatch(/sync_interval/);
    expect(config(false)).toMatch(/resolver: MEMORY/);
  });
});
