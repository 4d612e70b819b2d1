/**
 * Bounded best-k selection: a min-heap of at most k items by score, so ranking n candidates
 * costs O(n log k) and k items of memory instead of sorting all n.
 */

/** Orders two items of equal score: negative when `a` should rank first. */
export type TieBreak<T> = (a: T, b: T) => number;

export class TopK<T> {
  private readonly scores: number[] = [];
  private readonly items: T[] = [];

  constructor(
    private readonly k: number,
    private readonly tieBreak: TieBreak<T>,
  ) {}

  get size(): number {
    return this.items.length;
  }

  /** Whether an item scoring `score` could enter (cheap pre-check before building the item). */
  admits(score: number): boolean {
    return this.items.length < this.k || score >= (this.scores[0] as number);
  }

  push(score: number, item: T): void {
    if (this.items.length < this.k) {
      this.scores.push(score);
      this.items.push(item);
      this.up(this.items.length - 1);
    } else if (this.worse(0, score, item)) {
      this.scores[0] = score;
      this.items[0] = item;
      this.down(0);
    }
  }

  /** The items, best first. */
  sorted(): { score: number; item: T }[] {
    const out = this.items.map((item, i) => ({ score: this.scores[i] as number, item }));
    return out.sort((a, b) => b.score - a.score || this.tieBreak(a.item, b.item));
  }

  /** Whether the heap entry at `i` ranks below (score, item). */
  private worse(i: number, score: number, item: T): boolean {
    const s = this.scores[i] as number;
    return s < score || (s === score && this.tieBreak(item, this.items[i] as T) < 0);
  }

  /** Whether entry `i` ranks below entry `j` (the min-heap order). */
  private below(i: number, j: number): boolean {
    return this.worse(i, this.scores[j] as number, this.items[j] as T);
  }

  private swap(i: number, j: number): void {
    const s = this.scores[i] as number;
    this.scores[i] = this.scores[j] as number;
    this.scores[j] = s;
    const t = this.items[i] as T;
    this.items[i] = this.items[j] as T;
    this.items[j] = t;
  }

  private up(i: number): void {
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.below(i, parent)) return;
      this.swap(i, parent);
      i = parent;
    }
  }

  private down(i: number): void {
    const n = this.items.length;
    for (;;) {
      const left = 2 * i + 1;
      const right = left + 1;
      let least = i;
      if (left < n && this.below(left, least)) least = left;
      if (right < n && this.below(right, least)) least = right;
      if (least === i) return;
      this.swap(i, least);
      i = least;
    }
  }
}
