-- archive.lua: every event as one JSON line in a file per project and day, the project's
-- secrets masked (the bundled recipe `archive`; `luahook recipes archive`).
--   ARCHIVE_DIR  the folder of the files, which must exist (the .deb's service can write
--                in /var/lib/luahook)
-- Without ARCHIVE_DIR it stays off and says so once at load.
local dir = env("ARCHIVE_DIR", "") -- empty is the same as unset
if dir == "" then
  log.info("archive is off: set ARCHIVE_DIR to a writable folder to turn it on")
else
  use("archive", { dir = dir })
end
