const LABELS = [
  'plastic',
  'paper',
  'glass',
  'can',
  'vinyl',
  'styrofoam',
  'clothing',
  'battery',
  'electronics',
  'food_waste',
  'metal',
  'pet_bottle',
  'general',
] as const;

/**
 * A valid catalog CSV with `rows` characters: unique codes (`char-000001`, ...),
 * the same bytes for the same `rows`, the last row the only default, and a
 * quoted dialog with a comma and an escaped quote on every row.
 */
export function bigCatalogCsv(rows: number): Buffer {
  const lines = ['code,name,match_label,type_label,dialog,is_default'];
  for (let i = 1; i <= rows; i++) {
    const n = String(i).padStart(6, '0');
    const label = LABELS[i % LABELS.length]!;
    const dialog = `"Hi, I am ""character ${n}"" and I sort ${label}!"`;
    lines.push(`char-${n},Character ${n},${label},recyclable,${dialog},${i === rows ? 'true' : 'false'}`);
  }
  return Buffer.from(`${lines.join('\n')}\n`, 'utf8');
}
