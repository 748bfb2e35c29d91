-- An artifact's metadata. ARGV[4] key. Read-only: one past its deadline reads as absent.
local key = ARGV[4]
local a = load_artifact(key)
if not a or (a.ea > 0 and a.ea <= NOW) then return {'absent'} end
return artifact_reply('ok', key, a)
