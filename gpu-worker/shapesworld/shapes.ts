/**
 * ShapesWorld shape geometry: an inside test per shape in normalized object coordinates, where the unrotated
 * shape's bounding box is centred on the origin and its larger half-side is 1 (x right, y down). The renderer
 * scales these by an object's radius; the analyzer uses them as templates.
 *
 * @example
 * ```ts
 * insideShape("circle", 0.5, 0.5); // true
 * SHAPE_HALF_EXTENT.arrow; // [1, 0.72]
 * ```
 */
import type { ShapeName } from "./world.ts";

/** Whether the point (x, y) of normalized object coordinates lies inside the shape. */
export type InsideTest = (x: number, y: number) => boolean;

const STAR_OUTER = 1 / Math.sin((2 * Math.PI) / 5); // the widest points then sit at x = ±1
const STAR_INNER = 0.42 * STAR_OUTER;
const STAR_CY = (STAR_OUTER - STAR_OUTER * Math.cos(Math.PI / 5)) / 2; // centres the box vertically
const STAR_SECTOR = (2 * Math.PI) / 5;
const STAR_IX = STAR_INNER * Math.sin(Math.PI / 5);
const STAR_IY = STAR_INNER * Math.cos(Math.PI / 5);

function star(x: number, y: number): boolean {
  const px = x;
  const py = y - STAR_CY;
  const rho = Math.hypot(px, py);
  if (rho <= STAR_INNER) return true;
  if (rho > STAR_OUTER) return false;
  // Angle clockwise from straight up, folded onto [0, 36°] from the nearest outer vertex.
  let a = Math.atan2(px, -py) % STAR_SECTOR;
  if (a < 0) a += STAR_SECTOR;
  if (a > STAR_SECTOR / 2) a = STAR_SECTOR - a;
  const qx = rho * Math.sin(a);
  const qy = rho * Math.cos(a) - STAR_OUTER;
  // Inside when on the centre's side of the edge from the outer vertex (0, R) to the inner vertex.
  const dx = STAR_IX;
  const dy = STAR_IY - STAR_OUTER;
  return dx * qy - dy * qx <= 0;
}

// Heart: (x² + y² - 1)³ ≤ x² y³ with y up spans x ∈ [-1.139, 1.139], y ∈ [-1, 1.236].
const HEART_SCALE = 1.139;
const HEART_CY = (1.236 - 1) / 2;

function heart(x: number, y: number): boolean {
  const hx = x * HEART_SCALE;
  const hy = -y * HEART_SCALE + HEART_CY;
  const a = hx * hx + hy * hy - 1;
  return a * a * a <= hx * hx * hy * hy * hy;
}

// Crescent: the unit disc minus a disc of radius 0.82 centred at (0.45, 0); the tips are at x = 0.589.
const CRESCENT_SHIFT = (1 + 0.589) / 2 - 1;

function crescent(x: number, y: number): boolean {
  const cx = x + CRESCENT_SHIFT;
  return cx * cx + y * y <= 1 && (cx - 0.45) * (cx - 0.45) + y * y > 0.82 * 0.82;
}

/**
 * The inside test of every shape, in normalized object coordinates.
 *
 * @example
 * ```ts
 * SHAPE_INSIDE.ring(0, 0); // false: the hole
 * ```
 */
export const SHAPE_INSIDE: Readonly<Record<ShapeName, InsideTest>> = {
  circle: (x, y) => x * x + y * y <= 1,
  square: (x, y) => Math.abs(x) <= 1 && Math.abs(y) <= 1,
  triangle: (x, y) => y <= 0.87 && Math.abs(x) <= (y + 0.87) / 1.74,
  star,
  cross: (x, y) => {
    const ax = Math.abs(x);
    const ay = Math.abs(y);
    return (ax <= 0.34 && ay <= 1) || (ay <= 0.34 && ax <= 1);
  },
  ring: (x, y) => {
    const r2 = x * x + y * y;
    return r2 <= 1 && r2 >= 0.58 * 0.58;
  },
  diamond: (x, y) => Math.abs(x) / 0.8 + Math.abs(y) <= 1,
  heart,
  crescent,
  arrow: (x, y) => {
    if (x < -1 || x > 1) return false;
    if (x <= 0.15) return Math.abs(y) <= 0.26;
    return Math.abs(y) <= (0.72 * (1 - x)) / 0.85;
  },
};

/**
 * Half-sides [x, y] of each unrotated shape's bounding box in normalized coordinates (the larger is 1).
 *
 * @example
 * ```ts
 * SHAPE_HALF_EXTENT.diamond; // [0.8, 1]
 * ```
 */
export const SHAPE_HALF_EXTENT: Readonly<Record<ShapeName, readonly [number, number]>> = {
  circle: [1, 1],
  square: [1, 1],
  triangle: [1, 0.87],
  star: [1, (STAR_OUTER + STAR_OUTER * Math.cos(Math.PI / 5)) / 2],
  cross: [1, 1],
  ring: [1, 1],
  diamond: [0.8, 1],
  heart: [1, (1.236 + 1) / 2 / HEART_SCALE],
  crescent: [(1 + 0.589) / 2, 1],
  arrow: [1, 0.72],
};

/**
 * Whether a point of normalized object coordinates is inside a shape.
 *
 * @example
 * ```ts
 * insideShape("cross", 0.9, 0.9); // false
 * ```
 */
export function insideShape(shape: ShapeName, x: number, y: number): boolean {
  return SHAPE_INSIDE[shape](x, y);
}
