/**
 * The inner loop of vector search: dot products of one query against every row of a matrix,
 * in WebAssembly SIMD (f32x4). Plain JavaScript needs ~70 ms for 100k × 384 on this machine;
 * this kernel needs ~20 ms, which is close to the memory bandwidth of reading the matrix once.
 *
 * The module is 200 bytes, hand-assembled below rather than compiled from a toolchain the
 * project does not otherwise need. Its one function, in WebAssembly text form:
 *
 * ```wat
 * (module
 *   (import "env" "memory" (memory 0))
 *   ;; out[r] = Σ_j m[r·stride + j] · q[j] for r < n; stride is in floats, a multiple of 8
 *   (func (export "scores") (param $m i32) (param $q i32) (param $out i32) (param $n i32) (param $stride i32)
 *     (local $r i32) (local $j i32) (local $row i32) (local $bytes i32) (local $a v128) (local $b v128)
 *     (local.set $bytes (i32.shl (local.get $stride) (i32.const 2)))
 *     (local.set $row (local.get $m))
 *     (block $done (loop $rows
 *       (br_if $done (i32.ge_u (local.get $r) (local.get $n)))
 *       (local.set $a (v128.const i32x4 0 0 0 0))
 *       (local.set $b (v128.const i32x4 0 0 0 0))
 *       (local.set $j (i32.const 0))
 *       (block $end (loop $dims
 *         (br_if $end (i32.ge_u (local.get $j) (local.get $bytes)))
 *         (local.set $a (f32x4.add (local.get $a) (f32x4.mul
 *           (v128.load (i32.add (local.get $row) (local.get $j)))
 *           (v128.load (i32.add (local.get $q) (local.get $j))))))
 *         (local.set $b (f32x4.add (local.get $b) (f32x4.mul
 *           (v128.load offset=16 (i32.add (local.get $row) (local.get $j)))
 *           (v128.load offset=16 (i32.add (local.get $q) (local.get $j))))))
 *         (local.set $j (i32.add (local.get $j) (i32.const 32)))
 *         (br $dims)))
 *       (local.set $a (f32x4.add (local.get $a) (local.get $b)))
 *       (f32.store (i32.add (local.get $out) (i32.shl (local.get $r) (i32.const 2)))
 *         (f32.add (f32.add (f32.add (f32x4.extract_lane 0 (local.get $a)) (f32x4.extract_lane 1 (local.get $a)))
 *                           (f32x4.extract_lane 2 (local.get $a))) (f32x4.extract_lane 3 (local.get $a))))
 *       (local.set $row (i32.add (local.get $row) (local.get $bytes)))
 *       (local.set $r (i32.add (local.get $r) (i32.const 1)))
 *       (br $rows))))
 * ```
 */

/** Rows are padded to a multiple of this many floats (two f32x4 lanes per step). */
export const LANES = 8;

const ZERO_V128 = new Array<number>(16).fill(0);

// Local indices: params m=0 q=1 out=2 n=3 stride=4; locals r=5 j=6 row=7 bytes=8 a=9 b=10.
const BODY = [
  0x02, 0x04, 0x7f, 0x02, 0x7b, // locals: 4 × i32, 2 × v128
  0x20, 0x04, 0x41, 0x02, 0x74, 0x21, 0x08, // bytes = stride << 2
  0x20, 0x00, 0x21, 0x07, // row = m
  0x02, 0x40, 0x03, 0x40, // block $done, loop $rows
  0x20, 0x05, 0x20, 0x03, 0x4f, 0x0d, 0x01, // br_if $done (r >= n)
  0xfd, 0x0c, ...ZERO_V128, 0x21, 0x09, // a = 0
  0xfd, 0x0c, ...ZERO_V128, 0x21, 0x0a, // b = 0
  0x41, 0x00, 0x21, 0x06, // j = 0
  0x02, 0x40, 0x03, 0x40, // block $end, loop $dims
  0x20, 0x06, 0x20, 0x08, 0x4f, 0x0d, 0x01, // br_if $end (j >= bytes)
  0x20, 0x09, // a
  0x20, 0x07, 0x20, 0x06, 0x6a, 0xfd, 0x00, 0x02, 0x00, // v128.load row+j
  0x20, 0x01, 0x20, 0x06, 0x6a, 0xfd, 0x00, 0x02, 0x00, // v128.load q+j
  0xfd, 0xe6, 0x01, 0xfd, 0xe4, 0x01, 0x21, 0x09, // a = a + mul
  0x20, 0x0a, // b
  0x20, 0x07, 0x20, 0x06, 0x6a, 0xfd, 0x00, 0x02, 0x10, // v128.load offset=16 row+j
  0x20, 0x01, 0x20, 0x06, 0x6a, 0xfd, 0x00, 0x02, 0x10, // v128.load offset=16 q+j
  0xfd, 0xe6, 0x01, 0xfd, 0xe4, 0x01, 0x21, 0x0a, // b = b + mul
  0x20, 0x06, 0x41, 0x20, 0x6a, 0x21, 0x06, // j += 32
  0x0c, 0x00, // br $dims
  0x0b, 0x0b, // end loop, end block
  0x20, 0x09, 0x20, 0x0a, 0xfd, 0xe4, 0x01, 0x21, 0x09, // a = a + b
  0x20, 0x02, 0x20, 0x05, 0x41, 0x02, 0x74, 0x6a, // address out + (r << 2)
  0x20, 0x09, 0xfd, 0x1f, 0x00, // lane 0
  0x20, 0x09, 0xfd, 0x1f, 0x01, 0x92, // + lane 1
  0x20, 0x09, 0xfd, 0x1f, 0x02, 0x92, // + lane 2
  0x20, 0x09, 0xfd, 0x1f, 0x03, 0x92, // + lane 3
  0x38, 0x02, 0x00, // f32.store
  0x20, 0x07, 0x20, 0x08, 0x6a, 0x21, 0x07, // row += bytes
  0x20, 0x05, 0x41, 0x01, 0x6a, 0x21, 0x05, // r += 1
  0x0c, 0x00, // br $rows
  0x0b, 0x0b, // end loop, end block
  0x0b, // end func
];

function leb128(n: number): number[] {
  const out: number[] = [];
  do {
    let byte = n & 0x7f;
    n >>>= 7;
    if (n !== 0) byte |= 0x80;
    out.push(byte);
  } while (n !== 0);
  return out;
}

function section(id: number, bytes: number[]): number[] {
  return [id, ...leb128(bytes.length), ...bytes];
}

const ascii = (s: string): number[] => [s.length, ...Array.from(s, (c) => c.charCodeAt(0))];

const MODULE_BYTES = new Uint8Array([
  0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // magic, version 1
  ...section(1, [0x01, 0x60, 0x05, 0x7f, 0x7f, 0x7f, 0x7f, 0x7f, 0x00]), // type: (i32 × 5) -> ()
  ...section(2, [0x01, ...ascii("env"), ...ascii("memory"), 0x02, 0x00, 0x00]), // import memory, min 0
  ...section(3, [0x01, 0x00]), // one function of type 0
  ...section(7, [0x01, ...ascii("scores"), 0x00, 0x00]), // export it
  ...section(10, [0x01, ...leb128(BODY.length), ...BODY]), // its code
]);

/**
 * The slice of the WebAssembly JS API used here. Node has it at runtime; the project's type
 * libraries (ES2022 + @types/node, no DOM) do not declare it.
 */
export interface WasmMemory {
  readonly buffer: ArrayBuffer;
  grow(pages: number): number;
}
interface WasmApi {
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object, imports: Record<string, Record<string, unknown>>) => { exports: Record<string, unknown> };
  Memory: new (descriptor: { initial: number; maximum?: number }) => WasmMemory;
}
const wasm = (globalThis as unknown as { WebAssembly: WasmApi }).WebAssembly;

let compiled: object | undefined;

function module(): object {
  compiled ??= new wasm.Module(MODULE_BYTES);
  return compiled;
}

/** `scores(m, q, out, n, stride)`: byte offsets into the memory, `stride` in floats (× {@link LANES}). */
export type ScoresFn = (m: number, q: number, out: number, n: number, stride: number) => void;

/** A WebAssembly memory of `pages` 64 KiB pages, growable to `maximum`. */
export function wasmMemory(pages: number, maximum: number): WasmMemory {
  return new wasm.Memory({ initial: pages, maximum });
}

/** Instantiates the kernel over `memory`. */
export function scoresKernel(memory: WasmMemory): ScoresFn {
  const instance = new wasm.Instance(module(), { env: { memory } });
  return instance.exports["scores"] as ScoresFn;
}
