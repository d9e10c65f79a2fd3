// A blurhash decoder (https://github.com/woltapp/blurhash, its algorithm as documented
// there). Hand-written because the reference TypeScript package ships no browser bundle
// we could vendor without a build step, and the whole decoder is this small.

const DIGITS =
  "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz#$%*+,-.:;=?@[]^_{|}~";

function decode83(text) {
  let value = 0;
  for (const c of text) {
    const digit = DIGITS.indexOf(c);
    if (digit < 0) throw new Error("not a blurhash");
    value = value * 83 + digit;
  }
  return value;
}

function toLinear(value) {
  const v = value / 255;
  return v <= 0.04045 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4);
}

function toSrgb(value) {
  const v = Math.max(0, Math.min(1, value));
  const s = v <= 0.0031308 ? v * 12.92 : 1.055 * Math.pow(v, 1 / 2.4) - 0.055;
  return Math.round(s * 255);
}

function signPow(value, exp) {
  return Math.sign(value) * Math.pow(Math.abs(value), exp);
}

/** The RGBA pixels (width × height) a blurhash stands for; throws on a malformed one. */
export function decodeBlurhash(hash, width, height) {
  if (!hash || hash.length < 6) throw new Error("not a blurhash");
  const size = decode83(hash[0]);
  const nx = (size % 9) + 1;
  const ny = Math.floor(size / 9) + 1;
  if (hash.length !== 4 + 2 * nx * ny) throw new Error("not a blurhash");
  const maximum = (decode83(hash[1]) + 1) / 166;
  const colours = [];
  const dc = decode83(hash.slice(2, 6));
  colours.push([toLinear(dc >> 16), toLinear((dc >> 8) & 255), toLinear(dc & 255)]);
  for (let i = 1; i < nx * ny; i++) {
    const ac = decode83(hash.slice(4 + i * 2, 6 + i * 2));
    const q = (v) => signPow((v - 9) / 9, 2) * maximum;
    colours.push([q(Math.floor(ac / 361)), q(Math.floor(ac / 19) % 19), q(ac % 19)]);
  }
  const pixels = new Uint8ClampedArray(width * height * 4);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      let r = 0, g = 0, b = 0;
      for (let j = 0; j < ny; j++) {
        for (let i = 0; i < nx; i++) {
          const basis =
            Math.cos((Math.PI * x * i) / width) * Math.cos((Math.PI * y * j) / height);
          const c = colours[i + j * nx];
          r += c[0] * basis;
          g += c[1] * basis;
          b += c[2] * basis;
        }
      }
      const at = 4 * (x + y * width);
      pixels[at] = toSrgb(r);
      pixels[at + 1] = toSrgb(g);
      pixels[at + 2] = toSrgb(b);
      pixels[at + 3] = 255;
    }
  }
  return pixels;
}

/** A small canvas painted with the blurhash (stretched by CSS), or null when malformed. */
export function blurhashCanvas(hash) {
  const canvas = document.createElement("canvas");
  canvas.width = 32;
  canvas.height = 32;
  try {
    const pixels = decodeBlurhash(hash, 32, 32);
    canvas.getContext("2d").putImageData(new ImageData(pixels, 32, 32), 0, 0);
  } catch {
    return null;
  }
  canvas.className = "placeholder";
  canvas.setAttribute("aria-hidden", "true");
  return canvas;
}
