/** A character as an operator writes it (CSV row or admin API body); the id is assigned by the database. */
export interface CharacterInput {
  code: string;
  name: string;
  match_label: string;
  type_label: string | null;
  dialog: string | null;
  is_default: boolean;
}
