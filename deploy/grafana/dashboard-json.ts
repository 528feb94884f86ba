// The type a dashboard's JSON file must satisfy: @grafana/schema's
// Dashboard, with its string enums (FieldColorModeId, ThresholdsMode,
// MappingType, ...) taken as the strings JSON spells them with, since
// TypeScript does not accept the string "palette-classic" where the enum
// member FieldColorModeId.PaletteClassic is expected. Everything else,
// numeric enums included, is Grafana's type as it is.
import type { Dashboard } from "@grafana/schema";

type AsJson<T> = T extends string
  ? `${T}`
  : T extends readonly (infer Item)[]
    ? AsJson<Item>[]
    : T extends object
      ? { [Key in keyof T]: AsJson<T[Key]> }
      : T;

export type DashboardJson = AsJson<Dashboard>;
