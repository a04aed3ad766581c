/** Reads a SentencePiece `.model` file (a serialized ModelProto) into an `SpSpec`. */
import { TuneError } from "../errors.ts";
import { asFloat, asInt32, asString, readFields, WireError } from "./_protobuf.ts";
import { CharsmapError, PrecompiledCharsmap } from "./_sp_charsmap.ts";
import { PieceType, type SpPiece, type SpSpec } from "./sentencepiece.ts";

/** TrainerSpec.ModelType. */
const MODEL_TYPES: Record<number, string> = { 1: "unigram", 2: "bpe", 3: "word", 4: "char" };

/**
 * Parse ModelProto bytes. Proto2 defaults apply to absent fields (model_type UNIGRAM,
 * add_dummy_prefix/remove_extra_whitespaces/escape_whitespaces true, unk 0, bos 1, eos 2,
 * pad -1). Throws TuneError naming `path` for malformed input and for word/char models.
 */
export function parseSentencePieceModel(bytes: Uint8Array, path: string): SpSpec {
  try {
    return parse(bytes, path);
  } catch (e) {
    if (e instanceof WireError || e instanceof CharsmapError) {
      throw new TuneError(
        `tokenizer file ${path} is corrupt or truncated: not a valid SentencePiece model or llama2.c tokenizer.bin (${e.message}); pass the tokenizer file that came with the checkpoint`,
      );
    }
    throw e;
  }
}

function parse(bytes: Uint8Array, path: string): SpSpec {
  const pieces: SpPiece[] = [];
  let modelType = 1;
  let byteFallback = false;
  let treatWhitespaceAsSuffix = false;
  let unkId = 0, bosId = 1, eosId = 2, padId = -1;
  let unkSurface = " \u2047 ";
  let addDummyPrefix = true, removeExtraWhitespaces = true, escapeWhitespaces = true;
  let charsmap: PrecompiledCharsmap | undefined;
  let sawTrainerSpec = false;
  for (const f of readFields(bytes)) {
    if (f.field === 1 && f.wire === 2) {
      const p: SpPiece = { piece: "", score: 0, type: PieceType.NORMAL };
      for (const g of readFields(f.bytes!)) {
        if (g.field === 1 && g.wire === 2) p.piece = asString(g);
        else if (g.field === 2 && g.wire === 5) p.score = asFloat(g);
        else if (g.field === 3 && g.wire === 0) p.type = asInt32(g);
      }
      pieces.push(p);
    } else if (f.field === 2 && f.wire === 2) {
      sawTrainerSpec = true;
      for (const g of readFields(f.bytes!)) {
        if (g.wire === 0) {
          const v = asInt32(g);
          if (g.field === 3) modelType = v;
          else if (g.field === 35) byteFallback = v !== 0;
          else if (g.field === 24) treatWhitespaceAsSuffix = v !== 0;
          else if (g.field === 40) unkId = v;
          else if (g.field === 41) bosId = v;
          else if (g.field === 42) eosId = v;
          else if (g.field === 43) padId = v;
        } else if (g.field === 44 && g.wire === 2) {
          unkSurface = asString(g);
        }
      }
    } else if (f.field === 3 && f.wire === 2) {
      for (const g of readFields(f.bytes!)) {
        // field 1 (the normalizer's name) is informational: the charsmap below is what applies
        if (g.field === 2 && g.wire === 2 && g.bytes!.length > 0) {
          charsmap = new PrecompiledCharsmap(g.bytes!);
        } else if (g.wire === 0) {
          const v = asInt32(g) !== 0;
          if (g.field === 3) addDummyPrefix = v;
          else if (g.field === 4) removeExtraWhitespaces = v;
          else if (g.field === 5) escapeWhitespaces = v;
        }
      }
    } else if (f.field > 5 && f.field < 200) {
      // ModelProto only has fields 1-5 (and extensions from 200): anything else is not a model
      throw new WireError(`unexpected top-level field ${f.field}`);
    }
  }
  if (pieces.length === 0) throw new WireError("no vocabulary pieces");
  // every trained model has a trainer_spec after its pieces; without one the file was cut short
  if (!sawTrainerSpec) throw new WireError(`no trainer_spec after ${pieces.length} pieces`);
  if (modelType !== 1 && modelType !== 2) {
    const name = MODEL_TYPES[modelType] ?? `type ${modelType}`;
    throw new TuneError(
      `tokenizer ${path} is a SentencePiece ${name} model; tune reads SentencePiece BPE and unigram models, use the model's tokenizer.json instead`,
    );
  }
  const inRange = (id: number) => id < pieces.length;
  if (![unkId, bosId, eosId, padId].every(inRange) || unkId < 0) {
    throw new WireError(
      `special ids (unk ${unkId}, bos ${bosId}, eos ${eosId}) exceed the ${pieces.length} pieces`,
    );
  }
  return {
    modelType: modelType === 1 ? "unigram" : "bpe",
    pieces,
    byteFallback,
    addDummyPrefix,
    removeExtraWhitespaces,
    escapeWhitespaces,
    treatWhitespaceAsSuffix,
    unkId,
    bosId,
    eosId,
    padId,
    unkSurface,
    charsmap,
  };
}
