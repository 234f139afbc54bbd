// Threefry-2x32 with 20 rounds, as runtime/src/interp/rng.rs.
fn rotl_(x: u32, r: u32) -> u32 { return (x << r) | (x >> (32u - r)); }
fn threefry_(k0: u32, k1: u32, c0: u32, c1: u32) -> vec2<u32> {
  let ks = array<u32, 3>(k0, k1, 0x1BD11BDAu ^ k0 ^ k1);
  let rot = array<u32, 8>(13u, 15u, 26u, 6u, 17u, 29u, 16u, 24u);
  var x0 = c0 + ks[0];
  var x1 = c1 + ks[1];
  for (var r: u32 = 0u; r < 20u; r = r + 1u) {
    x0 = x0 + x1;
    x1 = rotl_(x1, rot[r % 8u]) ^ x0;
    if (r % 4u == 3u) {
      let s = r / 4u + 1u;
      x0 = x0 + ks[s % 3u];
      x1 = x1 + ks[(s + 1u) % 3u] + s;
    }
  }
  return vec2<u32>(x0, x1);
}
