/**
 * Lint configuration. Besides the recommended rules it does two jobs:
 *
 * - Type-aware promise rules as errors: a dropped promise in a message bus is a lost message.
 * - Import boundaries, so the tree and the import graph tell the same story:
 *     src/protocol  pure: no NATS, no LMDB, no fs/child_process/net, nothing from the other src folders
 *     src           never imports services/
 *     src/transport the only place that imports @nats-io/*
 *     services/<x>  never imports another service folder
 *
 * `no-restricted-imports` options do not merge across config objects (a later match replaces
 * the earlier options), so every area below lists its complete set of restrictions.
 */
import js from "@eslint/js";
import { defineConfig } from "eslint/config";
import tseslint from "typescript-eslint";

const CODE = "**/*.{ts,mts,cts,js,mjs,cjs}";

/** @typedef {{ regex: string, message: string }} Restriction */

/** @type {Restriction} */
const noNats = {
  regex: "^(@nats-io/|nats$)",
  message: "Only src/transport may import NATS clients; go through src/transport (or the SDK).",
};

/** @type {Restriction} */
const noServices = {
  regex: "(^|/)services(/|$)",
  message: "src/ must never import from services/; move the shared code into src/.",
};

/** @type {Restriction[]} */
const protocolIsPure = [
  {
    regex: "^(@nats-io/|nats$|lmdb$)",
    message: "src/protocol is pure: no NATS and no LMDB. Put I/O in src/transport or a service.",
  },
  {
    regex: "^(node:)?(fs|child_process|net)(/.*)?$",
    message: "src/protocol is pure: no file, process or socket I/O.",
  },
  {
    regex: "^(\\.\\./)+(src/)?(transport|sdk|cli|runtime)(/|$)",
    message: "src/protocol is the bottom layer: it may not import transport, sdk, cli or runtime.",
  },
];

/**
 * Relative imports that leave a service folder. A file `depth` folders below `services/` that
 * climbs exactly `depth` levels lands in `services/` itself, i.e. in some service folder; one
 * more level and it is at the repository root, where only `services/...` is off limits.
 *
 * @param {number} depth
 * @returns {Restriction[]}
 */
function noOtherService(depth) {
  const up = "(\\.\\./)".repeat(depth);
  const message = "A service may not import another service folder; share code through src/.";
  return [
    { regex: `^${up}(?!\\.\\.(/|$))`, message },
    { regex: `^${up}\\.\\./services(/|$)`, message },
  ];
}

/**
 * @param {Restriction[]} restrictions
 * @returns {import("eslint").Linter.RulesRecord}
 */
function restrict(restrictions) {
  return { "no-restricted-imports": ["error", { patterns: restrictions }] };
}

/** One config object per folder depth under services/<name>/ (globs cannot express "depth"). */
const serviceBoundaries = [1, 2, 3, 4, 5, 6].map((depth) => ({
  name: `maxwell/boundaries/services-depth-${depth}`,
  files: [`services/*/${"*/".repeat(depth - 1)}*.{ts,mts,cts,js,mjs,cjs}`],
  rules: restrict([noNats, ...noOtherService(depth)]),
}));

export default defineConfig(
  {
    name: "maxwell/ignores",
    ignores: ["dist/", "coverage/", ".maxwell/", "**/node_modules/"],
  },
  {
    name: "maxwell/recommended",
    files: [CODE],
    extends: [js.configs.recommended, tseslint.configs.recommended],
    languageOptions: {
      ecmaVersion: 2022,
      sourceType: "module",
    },
    rules: {
      "@typescript-eslint/no-unused-vars": [
        "error",
        { argsIgnorePattern: "^_", varsIgnorePattern: "^_", caughtErrorsIgnorePattern: "^_" },
      ],
    },
  },
  {
    name: "maxwell/type-aware",
    files: ["**/*.{ts,mts,cts}"],
    languageOptions: {
      parserOptions: {
        projectService: {
          // TypeScript files at the root (tool configs) are outside tsconfig.json's include.
          allowDefaultProject: ["*.ts", "*.mts"],
        },
        tsconfigRootDir: import.meta.dirname,
      },
    },
    rules: {
      "@typescript-eslint/no-floating-promises": "error",
      "@typescript-eslint/no-misused-promises": "error",
    },
  },
  {
    name: "maxwell/plain-js",
    files: ["**/*.{js,mjs,cjs}"],
    languageOptions: {
      globals: { process: "readonly", console: "readonly", URL: "readonly" },
    },
  },

  // Import boundaries. Order matters: a later, narrower area replaces the options of an earlier one.
  {
    name: "maxwell/boundaries/src",
    files: [`src/${CODE}`],
    rules: restrict([noServices, noNats]),
  },
  {
    name: "maxwell/boundaries/transport",
    files: [`src/transport/${CODE}`],
    rules: restrict([noServices]),
  },
  {
    name: "maxwell/boundaries/protocol",
    files: [`src/protocol/${CODE}`],
    rules: restrict([noServices, ...protocolIsPure]),
  },
  ...serviceBoundaries,
  {
    name: "maxwell/boundaries/examples",
    files: [`examples/${CODE}`],
    rules: restrict([noNats]),
  },
);
