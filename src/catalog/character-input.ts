import type { Character } from '../datasets/catalog.ts';

/** A character as an operator writes it (CSV row or admin API body); the id is assigned by the database. */
export type CharacterInput = Omit<Character, 'id'>;
