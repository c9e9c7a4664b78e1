-- @description samaudio: Separate selection into stems (text prompts)
-- @version 0.2.0
-- @author samaudio contributors
-- @about
--   # samaudio: Separate selection
--
--   Select one audio item (optionally a time selection inside it), run this action and type what
--   to extract ("snare drum", "man speaking"). The region goes to a samaudio server through the
--   `samaudio separate` command line, in the background: REAPER stays responsive, a small window
--   shows progress and has a Cancel button. Two new tracks below the source track receive the
--   target and the residual, sample-aligned with the original, in one undo step.
--
--   Several sounds at once: type them separated by commas or semicolons ("vocals, drums; bass").
--   One stream separates them all; a folder track below the source track receives one track per
--   sound plus the residual (everything else), in one undo step. "Stems sum to the mix" makes the
--   residual the mix minus the other stems, so that the stems add back up to the source exactly.
--
--   Span mode ("use the selection as a span prompt") sends the whole item and marks the time
--   selection as "this sound, here" instead of cutting the audio to it.
--
--   Needs the samaudio thin client on this computer (`pip install samaudio`, which provides the
--   `samaudio` program) and a samaudio server to talk to. The dialog remembers the description,
--   server address, token, mode, the path of the `samaudio` program and the quality: fast, or best
--   (4 candidates chosen by the server's ranker, with predicted spans; about 4x the time).
-- @provides
--   [main] .
-- @changelog
--   0.2.0: several sounds at once (comma- or semicolon-separated) into a folder track; stems that
--   sum to the mix; stems in the source's sample format.
--   0.1.0: time selection or span prompt, background process with progress and cancel, target
--   and residual on new tracks in one undo step.

-- ReaScript API used (the minimum REAPER version follows from it; tests/test_reaper.py keeps the list
-- exact):
--   reaper.AddMediaItemToTrack reaper.AddTakeToMediaItem reaper.CountSelectedMediaItems
--   reaper.CountTracks reaper.DeleteExtState reaper.EnumerateFiles reaper.ExecProcess
--   reaper.GetActiveTake reaper.GetExtState reaper.GetMediaItemInfo_Value
--   reaper.GetMediaItemTakeInfo_Value reaper.GetMediaItemTake_Source reaper.GetMediaItem_Track
--   reaper.GetMediaSourceFileName reaper.GetMediaSourceLength reaper.GetMediaSourceType
--   reaper.GetMediaTrackInfo_Value reaper.GetProjectPath reaper.GetResourcePath
--   reaper.GetSelectedMediaItem reaper.GetSetMediaItemTakeInfo_String
--   reaper.GetSetMediaTrackInfo_String reaper.GetSet_LoopTimeRange reaper.GetTrack
--   reaper.GetUserInputs reaper.InsertTrackAtIndex reaper.Main_OnCommand
--   reaper.PCM_Source_CreateFromFile reaper.PreventUIRefresh reaper.RecursiveCreateDirectory
--   reaper.SetExtState reaper.SetMediaItemInfo_Value reaper.SetMediaItemTake_Source
--   reaper.SetMediaTrackInfo_Value reaper.ShowMessageBox reaper.TakeIsMIDI reaper.TrackList_AdjustWindows reaper.Undo_BeginBlock
--   reaper.Undo_EndBlock reaper.UpdateArrange reaper.ValidatePtr2 reaper.atexit reaper.defer
--   reaper.file_exists reaper.time_precise
--   gfx.drawstr gfx.getchar gfx.h gfx.init gfx.measurestr gfx.mouse_cap gfx.mouse_x gfx.mouse_y
--   gfx.quit gfx.rect gfx.set gfx.setfont gfx.update gfx.w gfx.x gfx.y

local M = {}

local EXT = "samaudio"                 -- ExtState section
local TITLE = "samaudio"
local DEFAULTS = {
  description = "",
  server = "127.0.0.1:50051",
  token = "",
  span_mode = "n",
  null_sum = "n",
  program = "samaudio",               -- on PATH; set a full path when REAPER's PATH lacks it (macOS apps)
  quality = "fast",
}
local SETTING_KEYS = { "description", "server", "token", "span_mode", "null_sum", "program", "quality" }
-- The dialog's quality choice as `samaudio separate` options. best: four candidates ranked by the server's
-- text ranker, each window prompted with the predicted spans (needs a server started with --text-ranker and
-- --span-predictor); about four times the work of fast.
local QUALITY_ARGS = {
  fast = {},
  best = { "--candidates", "4", "--predict-spans" },
}
local RUNNING_KEY = "running_job"      -- non-persistent ExtState: the job folder of the running separation
local POLL_SECONDS = 0.1               -- how often the job's files are read
local START_TIMEOUT = 60               -- the wrapper must have started the program by then (first PowerShell start is slow)
local CANCEL_GRACE = 5                 -- after a kill, wait this long for the wrapper's exit marker before cleaning up
local EPS = 1e-6                       -- seconds: REAPER positions are doubles; treat closer values as equal
local SOURCE_SLACK = 0.0005            -- an item may overhang its file by rounding; clamp up to half a millisecond

local IS_WINDOWS = package.config:sub(1, 1) == "\\"
local SEP = IS_WINDOWS and "\\" or "/"

---------------------------------------------------------------------------------------------------
-- Small helpers: files, quoting, numbers
---------------------------------------------------------------------------------------------------

local function join(a, b)
  if a:sub(-1) == "/" or a:sub(-1) == "\\" then return a .. b end
  return a .. SEP .. b
end

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local data = f:read("a")
  f:close()
  return data
end

-- The last `bytes` bytes of a file: progress lines accumulate in the program's stderr.
local function read_tail(path, bytes)
  local f = io.open(path, "rb")
  if not f then return nil end
  local size = f:seek("end")
  f:seek("set", math.max(0, size - bytes))
  local data = f:read("a")
  f:close()
  return data
end

local function write_file(path, data)
  local f, err = io.open(path, "wb")
  if not f then return false, err end
  f:write(data)
  f:close()
  return true
end

local function exists(path)
  return reaper.file_exists(path)
end

local function trim(s)
  return (s:gsub("^%s+", ""):gsub("%s+$", ""))
end

local function basename(path)
  return path:match("([^/\\]+)$") or path
end

local function stem_of(path)
  local name = basename(path)
  return name:match("^(.+)%.[^.]+$") or name
end

-- Seconds on the command line: microseconds are finer than a sample at 192 kHz; no exponent notation.
local function secs(x)
  local s = string.format("%.6f", x)
  s = s:gsub("0+$", ""):gsub("%.$", "")
  if s == "-0" then s = "0" end
  return s
end
M.secs = secs

-- POSIX shell word: single quotes, a quote inside written as '\''.
local function sh_quote(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end
M.sh_quote = sh_quote

-- One Windows command-line argument, quoted so that the MS C runtime (CommandLineToArgvW) splits it back
-- unchanged: the rules of Python's subprocess.list2cmdline. Backslashes are literal except before a quote.
local function win_quote(s)
  local quote = s == "" or s:find("[ \t]") ~= nil
  local out, slashes = {}, 0
  for ch in s:gmatch(".") do
    if ch == "\\" then
      slashes = slashes + 1
    elseif ch == '"' then
      out[#out + 1] = string.rep("\\", slashes * 2) .. '\\"'
      slashes = 0
    else
      out[#out + 1] = string.rep("\\", slashes) .. ch
      slashes = 0
    end
  end
  -- Backslashes before the closing quote must be doubled, elsewhere they stand for themselves.
  out[#out + 1] = string.rep("\\", quote and slashes * 2 or slashes)
  if quote then return '"' .. table.concat(out) .. '"' end
  return table.concat(out)
end
M.win_quote = win_quote

-- PowerShell single-quoted literal.
local function ps_quote(s)
  return "'" .. s:gsub("'", "''") .. "'"
end

-- A file name made of the user's words: no path separators or characters Windows refuses.
local function safe_name(s, max_len)
  s = trim(s):gsub('[%c/\\:%*%?"<>|]', "_")
  if #s > max_len then s = s:sub(1, max_len) end
  if s == "" then s = "stem" end
  return s
end

local function split(s, sep)
  local parts, from = {}, 1
  while true do
    local at = s:find(sep, from, true)
    if not at then
      parts[#parts + 1] = s:sub(from)
      return parts
    end
    parts[#parts + 1] = s:sub(from, at - 1)
    from = at + #sep
  end
end

-- The sounds the user typed: "vocals, drums; bass" -> { "vocals", "drums", "bass" } (empty parts dropped).
function M.descriptions(text)
  local out = {}
  for part in (text or ""):gmatch("[^,;]+") do
    part = trim(part)
    if part ~= "" then out[#out + 1] = part end
  end
  return out
end

local function message(text)
  reaper.ShowMessageBox(text, TITLE, 0)
end

---------------------------------------------------------------------------------------------------
-- Settings (ExtState) and the dialog
---------------------------------------------------------------------------------------------------

local function load_settings()
  local s = {}
  for _, key in ipairs(SETTING_KEYS) do
    local v = reaper.GetExtState(EXT, key)
    if v == "" then v = DEFAULTS[key] end   -- never set
    s[key] = v
  end
  return s
end

local function save_settings(s)
  for _, key in ipairs(SETTING_KEYS) do
    reaper.SetExtState(EXT, key, s[key], true)
  end
end

local function is_yes(v)
  v = trim(v):lower()
  return v == "y" or v == "yes" or v == "1" or v == "true" or v == "on"
end

-- Returns the settings the user confirmed, or nil when the dialog was cancelled.
local function ask_settings(s)
  -- A newline separates the answers: commas and semicolons separate sounds in the first one.
  local captions = table.concat({
    "Sounds to extract (a; b; c)", "Server (host:port)", "*Token (blank: none)",
    "Selection as span prompt (y/n)", "Stems sum to the mix (y/n)", "samaudio program", "Quality (fast/best)",
    "extrawidth=240", "separator=\n",
  }, ",")
  local shown = table.concat({ s.description, s.server, s.token, s.span_mode, s.null_sum, s.program, s.quality },
    "\n")
  local ok, answer = reaper.GetUserInputs("samaudio: Separate selection", 7, captions, shown)
  if not ok then return nil end
  local f = split(answer, "\n")
  return {
    description = trim(f[1] or ""),
    server = trim(f[2] or ""),
    token = trim(f[3] or ""),
    span_mode = is_yes(f[4] or "") and "y" or "n",
    null_sum = is_yes(f[5] or "") and "y" or "n",
    program = trim(f[6] or ""),
    quality = trim(f[7] or ""):lower(),
  }
end

---------------------------------------------------------------------------------------------------
-- What to separate: the selected item, its take and source, the time selection
---------------------------------------------------------------------------------------------------

-- Returns a job table, or nil and the message that says what to fix.
function M.resolve_selection(span_mode)
  local count = reaper.CountSelectedMediaItems(0)
  if count == 0 then
    return nil, "No item selected.\n\nSelect one audio item (and, optionally, a time selection inside it), "
      .. "then run samaudio: Separate selection again."
  elseif count > 1 then
    return nil, string.format("%d items are selected.\n\nSelect exactly one audio item.", count)
  end
  local item = reaper.GetSelectedMediaItem(0, 0)
  local take = reaper.GetActiveTake(item)
  if not take then
    return nil, "The selected item has no take (an empty item).\n\nSelect an item that plays an audio file."
  end
  if reaper.TakeIsMIDI(take) then
    return nil, "The selected item is a MIDI item.\n\nsamaudio separates audio: select an item that plays an audio file."
  end
  local rate = reaper.GetMediaItemTakeInfo_Value(take, "D_PLAYRATE")
  if math.abs(rate - 1.0) > EPS then
    return nil, string.format("The take plays at rate %.4g, not 1.0.\n\nStems are placed sample-aligned only for "
      .. "takes at their original speed: set the take's playback rate to 1.0, or glue the item "
      .. "(Item: Glue items) and run the action on the glued item.", rate)
  end
  local source = reaper.GetMediaItemTake_Source(take)
  local kind = reaper.GetMediaSourceType(source, "")
  if kind == "SECTION" then
    return nil, "The take plays a section or a reversed copy of its file.\n\nGlue the item (Item: Glue items) and run "
      .. "the action on the glued item."
  end
  local file = reaper.GetMediaSourceFileName(source, "")
  if file == nil or file == "" then
    return nil, string.format("The take's source (%s) is not a file on disk.\n\nGlue the item to render it to a "
      .. "file, then run the action again.", kind)
  end
  local source_length = reaper.GetMediaSourceLength(source)

  local pos = reaper.GetMediaItemInfo_Value(item, "D_POSITION")
  local len = reaper.GetMediaItemInfo_Value(item, "D_LENGTH")
  local offs = reaper.GetMediaItemTakeInfo_Value(take, "D_STARTOFFS")
  local item_end = pos + len

  local sel_start, sel_end = reaper.GetSet_LoopTimeRange(false, false, 0, 0, false)
  local has_selection = sel_end - sel_start > EPS
  local from, to = pos, item_end
  if has_selection then
    if sel_end <= pos + EPS or sel_start >= item_end - EPS then
      return nil, string.format("The time selection (%.3f to %.3f s) is outside the selected item (%.3f to %.3f s)."
        .. "\n\nMove the time selection onto the item, or clear it to separate the whole item.",
        sel_start, sel_end, pos, item_end)
    end
    from, to = math.max(sel_start, pos), math.min(sel_end, item_end)   -- the part inside the item
  elseif span_mode then
    return nil, "Span mode uses the time selection as the prompt (\"this sound, here\"), and there is none.\n\n"
      .. "Make a time selection over the sound inside the item, or answer n to the span question."
  end

  local job = {
    item = item,
    track = reaper.GetMediaItem_Track(item),
    file = file,
    span_mode = span_mode,
  }
  if span_mode then
    -- The whole item goes to the server, the selection as the "+" span. The command line takes spans on
    -- the file's timeline (and moves them onto the region's itself), so the span is where the selection
    -- plays in the file.
    job.region_start, job.region_length = offs, len
    job.span = { offs + (from - pos), offs + (to - pos) }
    job.place_at, job.place_length = pos, len
  else
    -- The item starts offs seconds into its file: the selection's place in the file follows from that.
    job.region_start, job.region_length = offs + (from - pos), to - from
    job.place_at, job.place_length = from, to - from
  end

  local overhang = job.region_start + job.region_length - source_length
  if job.region_start < -EPS or overhang > SOURCE_SLACK then
    return nil, string.format("The item plays %.3f to %.3f s of its file, which is %.3f s long (the item is "
      .. "extended or looped past the file).\n\nTrim the item to the file, or glue it, then run the action again.",
      job.region_start, job.region_start + job.region_length, source_length)
  end
  if overhang > 0 then job.region_length = job.region_length - overhang end
  job.region_start = math.max(0, job.region_start)
  return job
end

---------------------------------------------------------------------------------------------------
-- The background process: a wrapper script records the program's pid and exit code in a job folder
---------------------------------------------------------------------------------------------------

local function temp_root()
  local root = IS_WINDOWS and (os.getenv("TEMP") or os.getenv("TMP")) or os.getenv("TMPDIR")
  if root == nil or root == "" then root = IS_WINDOWS and reaper.GetResourcePath() or "/tmp" end
  return root
end

local function new_job_dir()
  math.randomseed(math.floor(reaper.time_precise() * 1000) % 2147483647 + os.time())
  for _ = 1, 20 do
    local dir = join(temp_root(), string.format("samaudio-reaper-%d-%06d", os.time(), math.random(0, 999999)))
    if not exists(join(dir, "job")) then
      reaper.RecursiveCreateDirectory(dir, 0)
      if write_file(join(dir, "job"), "") then return dir end
    end
  end
  return nil
end

-- The program's arguments (the token travels in the environment, not on the command line).
function M.cli_args(job, settings, out_dir)
  local args = { "separate", job.file }
  for _, d in ipairs(M.descriptions(settings.description)) do
    args[#args + 1] = "--text"
    args[#args + 1] = d
  end
  for _, a in ipairs({ "--server", settings.server, "--out-dir", out_dir, "--start", secs(job.region_start),
      "--duration", secs(job.region_length) }) do
    args[#args + 1] = a
  end
  if settings.null_sum == "y" then args[#args + 1] = "--null-sum" end
  if job.span then
    args[#args + 1] = "--span"
    args[#args + 1] = "+" .. secs(job.span[1]) .. ":" .. secs(job.span[2])
  end
  for _, a in ipairs(QUALITY_ARGS[settings.quality or DEFAULTS.quality] or {}) do args[#args + 1] = a end
  return args
end

local function posix_wrapper(dir, program, args, token)
  local function p(name) return sh_quote(join(dir, name)) end
  local words = { sh_quote(program) }
  for _, a in ipairs(args) do words[#words + 1] = sh_quote(a) end
  local lines = {
    "#!/bin/sh",
    "# samaudio REAPER job: runs the program in the background, records its pid and exit code.",
    -- Apps started from the macOS Finder get a minimal PATH; add the usual install places.
    'PATH="$PATH:/usr/local/bin:/opt/homebrew/bin:$HOME/.local/bin"; export PATH',
  }
  if token ~= "" then lines[#lines + 1] = "SAMAUDIO_TOKEN=" .. sh_quote(token) .. "; export SAMAUDIO_TOKEN" end
  lines[#lines + 1] = table.concat(words, " ") .. " >" .. p("stdout.txt") .. " 2>" .. p("stderr.txt")
    .. " </dev/null &"
  lines[#lines + 1] = "echo $! >" .. p("pid.tmp") .. " && mv " .. p("pid.tmp") .. " " .. p("pid")
  -- A cancel that came before the pid file could be read: the script can't kill, so this does.
  lines[#lines + 1] = "if [ -e " .. p("cancel") .. " ] || [ -e " .. p("abandoned") .. " ]; then kill $!; fi"
  lines[#lines + 1] = "wait $!"
  lines[#lines + 1] = "echo $? >" .. p("exit.tmp") .. " && mv " .. p("exit.tmp") .. " " .. p("exit")
  -- The script ended while this ran (REAPER closed it): nobody else will clean up.
  lines[#lines + 1] = "if [ -e " .. p("abandoned") .. " ]; then rm -rf " .. sh_quote(dir) .. "; fi"
  return table.concat(lines, "\n") .. "\n"
end

local function windows_wrapper(dir, program, args, token)
  local quoted = {}
  for _, a in ipairs(args) do quoted[#quoted + 1] = win_quote(a) end
  local lines = {
    "# samaudio REAPER job: runs the program hidden, records its pid and exit code.",
    "$dir = " .. ps_quote(dir),
    "$code = 127",
  }
  if token ~= "" then lines[#lines + 1] = "$env:SAMAUDIO_TOKEN = " .. ps_quote(token) end
  for _, l in ipairs({
    "try {",
    "  $p = Start-Process -FilePath " .. ps_quote(program) .. " -ArgumentList " .. ps_quote(table.concat(quoted, " "))
      .. " -NoNewWindow -PassThru -RedirectStandardOutput (Join-Path $dir 'stdout.txt')"
      .. " -RedirectStandardError (Join-Path $dir 'stderr.txt')",
    "  $null = $p.Handle  # keeps ExitCode readable once the process is gone",
    "  Set-Content -Path (Join-Path $dir 'pid.tmp') -Value $p.Id",
    "  Move-Item -Force (Join-Path $dir 'pid.tmp') (Join-Path $dir 'pid')",
    "  if ((Test-Path (Join-Path $dir 'cancel')) -or (Test-Path (Join-Path $dir 'abandoned'))) {",
    "    taskkill /F /T /PID $p.Id | Out-Null",
    "  }",
    "  $p.WaitForExit()",
    "  $code = $p.ExitCode",
    "} catch {",
    "  Set-Content -Path (Join-Path $dir 'stderr.txt') -Value $_.Exception.Message",
    "}",
    "Set-Content -Path (Join-Path $dir 'exit.tmp') -Value $code",
    "Move-Item -Force (Join-Path $dir 'exit.tmp') (Join-Path $dir 'exit')",
    "if (Test-Path (Join-Path $dir 'abandoned')) { Remove-Item -Recurse -Force $dir }",
  }) do lines[#lines + 1] = l end
  -- A byte order mark makes Windows PowerShell 5 read the file as UTF-8 (paths with accents).
  return "\239\187\191" .. table.concat(lines, "\r\n") .. "\r\n"
end

-- Writes the wrapper into `dir` and starts it without waiting. Returns true or false and a message.
function M.start_process(dir, program, args, token)
  local launcher
  if IS_WINDOWS then
    local script = join(dir, "job.ps1")
    local ok, err = write_file(script, windows_wrapper(dir, program, args, token))
    if not ok then return false, err end
    launcher = 'powershell.exe -NoProfile -NonInteractive -ExecutionPolicy Bypass -WindowStyle Hidden -File "'
      .. script .. '"'
  else
    local script = join(dir, "job.sh")
    local ok, err = write_file(script, posix_wrapper(dir, program, args, token))
    if not ok then return false, err end
    launcher = '/bin/sh "' .. script .. '"'
  end
  reaper.ExecProcess(launcher, -2)   -- -2: start and return at once
  return true
end

local function kill_process(pid)
  if IS_WINDOWS then
    reaper.ExecProcess("taskkill /F /T /PID " .. pid, -2)
  else
    reaper.ExecProcess("/bin/kill " .. pid, 2000)
  end
end

local function remove_dir(dir)
  for _, name in ipairs({ "job", "job.sh", "job.ps1", "pid", "pid.tmp", "exit", "exit.tmp", "cancel",
      "abandoned", "stdout.txt", "stderr.txt" }) do
    os.remove(join(dir, name))
  end
  local left, i = {}, 0
  reaper.EnumerateFiles(dir, -1)   -- -1: forget REAPER's cached listing of the folder
  while true do   -- whatever else the program left (stems, .part files)
    local name = reaper.EnumerateFiles(dir, i)
    if name == nil or name == "" then break end
    left[#left + 1] = name
    i = i + 1
  end
  for _, name in ipairs(left) do os.remove(join(dir, name)) end
  if not os.remove(dir) and IS_WINDOWS then   -- C's remove() deletes no folders on Windows
    reaper.ExecProcess('cmd.exe /C rmdir /Q "' .. dir .. '"', -2)
  end
end

-- tqdm's bar is rewritten with carriage returns; the last "NN%" on the last line is the progress.
function M.parse_progress(text)
  if not text or text == "" then return nil end
  local last
  for segment in text:gmatch("[^\r\n]+") do
    local pct = segment:match("(%d+)%%|")
    if pct then last = tonumber(pct) end
  end
  return last
end

-- The program's own words for a failure: stderr without progress-bar lines, at most the last lines.
function M.error_text(stderr)
  local lines = {}
  for segment in (stderr or ""):gsub("\r\n", "\n"):gmatch("[^\r\n]+") do
    if not segment:match("%d+%%|") and trim(segment) ~= "" then lines[#lines + 1] = trim(segment) end
  end
  local from = math.max(1, #lines - 11)
  return table.concat(lines, "\n", from)
end

---------------------------------------------------------------------------------------------------
-- Putting the stems into the project
---------------------------------------------------------------------------------------------------

local function move_file(from, to)
  if os.rename(from, to) then return true end
  local data = read_file(from)          -- another volume: copy, then delete
  if not data then return false end
  local ok = write_file(to, data)
  if ok then os.remove(from) end
  return ok
end

local function unique_path(dir, name, ext)
  local path = join(dir, name .. "." .. ext)
  local n = 2
  while exists(path) do
    path = join(dir, string.format("%s (%d).%s", name, n, ext))
    n = n + 1
  end
  return path
end

local function add_stem_item(track, file, position, length, name)
  local item = reaper.AddMediaItemToTrack(track)
  local take = reaper.AddTakeToMediaItem(item)
  reaper.SetMediaItemTake_Source(take, reaper.PCM_Source_CreateFromFile(file))
  reaper.SetMediaItemInfo_Value(item, "D_POSITION", position)
  reaper.SetMediaItemInfo_Value(item, "D_LENGTH", length)
  reaper.GetSetMediaItemTakeInfo_String(take, "P_NAME", name, true)
  return item
end

-- Inserts the stems on new tracks right below the source track, as one undo step: `stems` is a list of
-- { file, name }. With `folder` (a name), they go into a new folder track there, the last closing it.
local function insert_stems(job, label, stems, folder)
  local index = reaper.CountTracks(0)   -- the end, if the source track was deleted meanwhile
  if reaper.ValidatePtr2(0, job.track, "MediaTrack*") then
    index = math.floor(reaper.GetMediaTrackInfo_Value(job.track, "IP_TRACKNUMBER"))  -- 1-based: the slot below
  end
  reaper.PreventUIRefresh(1)
  reaper.Undo_BeginBlock()
  if folder then
    reaper.InsertTrackAtIndex(index, true)
    local track = reaper.GetTrack(0, index)
    reaper.GetSetMediaTrackInfo_String(track, "P_NAME", folder, true)
    reaper.SetMediaTrackInfo_Value(track, "I_FOLDERDEPTH", 1)   -- the tracks below are its children
    index = index + 1
  end
  for i, stem in ipairs(stems) do
    reaper.InsertTrackAtIndex(index + i - 1, true)
    local track = reaper.GetTrack(0, index + i - 1)
    reaper.GetSetMediaTrackInfo_String(track, "P_NAME", stem[2], true)
    add_stem_item(track, stem[1], job.place_at, job.place_length, stem[2])
    if folder and i == #stems then reaper.SetMediaTrackInfo_Value(track, "I_FOLDERDEPTH", -1) end  -- closes it
  end
  reaper.Undo_EndBlock('samaudio: separate "' .. label .. '"', -1)
  reaper.PreventUIRefresh(-1)
  reaper.Main_OnCommand(40047, 0)   -- Peaks: Build any missing peaks
  reaper.TrackList_AdjustWindows(false)
  reaper.UpdateArrange()
end

---------------------------------------------------------------------------------------------------
-- The progress window and the polling loop
---------------------------------------------------------------------------------------------------

local Job = {}
Job.__index = Job

function Job:draw()
  local w, h = gfx.w, gfx.h
  gfx.set(0.16, 0.16, 0.16, 1)
  gfx.rect(0, 0, w, h, true)
  gfx.setfont(1, "Arial", 15)
  gfx.set(0.9, 0.9, 0.9, 1)
  gfx.x, gfx.y = 12, 10
  local what = self.state == "cancelling" and "Cancelling..."
    or ('Separating "' .. table.concat(M.descriptions(self.settings.description), '", "') .. '"')
  gfx.drawstr(what)
  gfx.x, gfx.y = 12, 32
  gfx.set(0.65, 0.65, 0.65, 1)
  gfx.drawstr(string.format("%s, %.1f s at %s", basename(self.job.file), self.job.region_length, self.settings.server))
  -- bar
  local bx, by, bw, bh = 12, 56, w - 24, 14
  gfx.set(0.3, 0.3, 0.3, 1)
  gfx.rect(bx, by, bw, bh, true)
  gfx.set(0.35, 0.65, 0.95, 1)
  gfx.rect(bx, by, math.floor(bw * (self.progress or 0) / 100), bh, true)
  gfx.set(0.9, 0.9, 0.9, 1)
  gfx.x, gfx.y = 12, by + bh + 8
  local elapsed = reaper.time_precise() - self.started_at
  gfx.drawstr(self.progress and string.format("%d%%  (%.0f s)", self.progress, elapsed)
    or string.format("starting... (%.0f s)", elapsed))
  -- Cancel button
  local cw, ch = 80, 24
  self.button = { x = w - cw - 12, y = h - ch - 10, w = cw, h = ch }
  gfx.set(0.3, 0.3, 0.3, 1)
  gfx.rect(self.button.x, self.button.y, cw, ch, true)
  gfx.set(0.9, 0.9, 0.9, 1)
  local tw, th = gfx.measurestr("Cancel")
  gfx.x, gfx.y = self.button.x + (cw - tw) / 2, self.button.y + (ch - th) / 2
  gfx.drawstr("Cancel")
  gfx.update()
end

-- True when the user asked to stop: Esc, the window closed, or a click released on Cancel.
function Job:cancel_requested()
  local char = gfx.getchar()
  if char == -1 then self.window_open = false end   -- closed by the user
  if char == -1 or char == 27 then return true end
  local down = math.floor(gfx.mouse_cap) % 2 == 1
  local b = self.button
  local clicked = self.mouse_was_down and not down and b
    and gfx.mouse_x >= b.x and gfx.mouse_x <= b.x + b.w and gfx.mouse_y >= b.y and gfx.mouse_y <= b.y + b.h
  self.mouse_was_down = down
  if clicked then return true end
  return exists(join(self.dir, "cancel"))   -- another run of this action asked to cancel
end

function Job:pid()
  local text = read_file(join(self.dir, "pid"))
  return text and text:match("(%d+)")
end

function Job:exit_code()
  local text = read_file(join(self.dir, "exit"))
  return text and tonumber(text:match("(%-?%d+)"))
end

function Job:close_window()
  if self.window_open then
    gfx.quit()
    self.window_open = false
  end
end

-- Leaves nothing behind: the process stopped, the job folder gone, the window closed.
function Job:finish()
  if self.finished then return end
  self.finished = true
  self:close_window()
  remove_dir(self.dir)
  reaper.DeleteExtState(EXT, RUNNING_KEY, false)
end

-- The marker file tells the wrapper to kill the program itself should its pid not be written yet.
function Job:begin_cancel()
  self.state = "cancelling"
  self.cancel_started_at = reaper.time_precise()
  write_file(join(self.dir, "cancel"), "")
end

function Job:collect(code)
  if code ~= 0 then
    local detail = M.error_text(read_file(join(self.dir, "stderr.txt")))
    local hint = ""
    if code == 127 or code == 126 then
      hint = "\n\nThe program '" .. self.settings.program .. "' could not be run. Install the samaudio client "
        .. "(pip install samaudio) and enter the full path of its samaudio program in the dialog "
        .. "(for example ~/venv/bin/samaudio, or C:\\...\\Scripts\\samaudio.exe)."
    elseif code == 2 then
      hint = "\n\n(exit 2: the program refused its arguments; is the samaudio client up to date?)"
    end
    self:finish()
    message(string.format("samaudio separate failed (exit %d).\n\n%s%s", code, detail, hint))
    return
  end
  local stem = stem_of(self.job.file)
  local sounds = M.descriptions(self.settings.description)
  local label = table.concat(sounds, ", ")
  -- made: { file the program wrote, name of the project file, track name }
  local made
  if #sounds == 1 then
    made = {
      { join(self.dir, stem .. ".target.wav"), label .. " - target", label .. " (target)" },
      { join(self.dir, stem .. ".residual.wav"), label .. " - residual", label .. " (residual)" },
    }
  else
    -- The program prints the paths it wrote, one per line: the sounds in the order given, then the residual.
    local paths = {}
    for line in (read_file(join(self.dir, "stdout.txt")) or ""):gmatch("[^\r\n]+") do paths[#paths + 1] = trim(line) end
    made = {}
    for i, sound in ipairs(sounds) do made[i] = { paths[#paths - #sounds - 1 + i] or "", sound, sound } end
    made[#made + 1] = { paths[#paths] or "", "residual", "residual" }
  end
  for _, m in ipairs(made) do
    if m[1] == "" or not exists(m[1]) then
      self:finish()
      message("samaudio separate finished but did not write " .. (m[1] ~= "" and m[1] or "every stem") .. ".")
      return
    end
  end
  -- The stems live next to the project's media, named after the source and the description.
  local media = reaper.GetProjectPath("")
  reaper.RecursiveCreateDirectory(media, 0)
  local base = safe_name(stem, 60) .. " - "
  local stems = {}
  for i, m in ipairs(made) do
    local path = unique_path(media, base .. safe_name(m[2], 60), "wav")
    if not move_file(m[1], path) then
      self:finish()
      message("Could not move the stems into the project folder " .. media .. ".")
      return
    end
    stems[i] = { path, m[3] }
  end
  self:finish()
  insert_stems(self.job, label, stems, #sounds > 1 and ("samaudio: " .. label) or nil)
end

function Job:poll()
  if self.finished then return end
  local now = reaper.time_precise()
  if self.window_open then
    if self.state == "running" and self:cancel_requested() then self:begin_cancel() end
    if self.window_open then self:draw() end
  end
  if now - self.last_poll >= POLL_SECONDS then
    self.last_poll = now
    local code = self:exit_code()
    if self.state == "cancelling" then
      local pid = not code and self:pid()
      if pid and not self.killed then   -- never signal a pid whose process has already ended
        kill_process(pid)
        self.killed = true
      end
      if code then
        self:finish()   -- cancelled: no tracks, no message
        return
      elseif (self.killed and now - self.cancel_started_at > CANCEL_GRACE)
          or (not pid and now - self.cancel_started_at > START_TIMEOUT) then
        self:abandon()
        return
      end
    else
      -- Read after the exit code: once the program has ended its stderr is complete, so the bar's
      -- last state (100% on success) is shown however quickly the run ended between two polls.
      local p = M.parse_progress(read_tail(join(self.dir, "stderr.txt"), 4096))
      if p then self.progress = p end
      if code then
        if self.window_open then self:draw() end
        self:collect(code)
        return
      end
      if not self:pid() and now - self.started_at > START_TIMEOUT then
        self:abandon()
        message(string.format("The background process did not start within %d s.", START_TIMEOUT))
        return
      end
    end
  end
  reaper.defer(function() self:poll() end)
end

-- Stops waiting for the job: when REAPER ends the script (atexit, also when the user terminates it) or
-- the wrapper does not answer in time. The "abandoned" marker asks the wrapper to kill the program (if
-- its pid is not written yet) and to delete the job folder once it is done. Marker first, then the
-- checks, so that one of the two sides always acts.
function Job:abandon()
  if self.finished then return end
  self.finished = true
  self:close_window()
  reaper.DeleteExtState(EXT, RUNNING_KEY, false)
  write_file(join(self.dir, "abandoned"), "")
  local pid = self:pid()
  if pid and not self:exit_code() then kill_process(pid) end
  if self:exit_code() then remove_dir(self.dir) end
end

function M.start(job, settings)
  local dir = new_job_dir()
  if not dir then
    message("Could not create a job folder in " .. temp_root() .. ".")
    return nil
  end
  local ok, err = M.start_process(dir, settings.program, M.cli_args(job, settings, dir), settings.token)
  if not ok then
    remove_dir(dir)
    message("Could not write the job script in " .. dir .. ": " .. tostring(err))
    return nil
  end
  local self = setmetatable({ job = job, settings = settings, dir = dir, state = "running",
    started_at = reaper.time_precise(), last_poll = -math.huge }, Job)
  reaper.SetExtState(EXT, RUNNING_KEY, dir, false)
  gfx.init("samaudio: separating", 440, 130)
  self.window_open = true
  reaper.atexit(function() self:abandon() end)
  reaper.defer(function() self:poll() end)
  return self
end

---------------------------------------------------------------------------------------------------
-- The action
---------------------------------------------------------------------------------------------------

-- A separation already running (started by an earlier run of this action)? Offer to cancel it.
local function running_job_handled()
  local dir = reaper.GetExtState(EXT, RUNNING_KEY)
  if dir == "" or not exists(join(dir, "job")) or exists(join(dir, "exit")) then return false end
  local answer = reaper.ShowMessageBox("A separation is running.\n\nCancel it?", TITLE, 4)
  if answer == 6 then write_file(join(dir, "cancel"), "") end
  return true
end

function M.main()
  if running_job_handled() then return end
  local _, why = M.resolve_selection(false)   -- refuse before asking anything
  if why then
    message(why)
    return
  end
  local settings = ask_settings(load_settings())
  if not settings then return end
  if #M.descriptions(settings.description) == 0 then
    message("Type what to extract, for example: snare drum. Several sounds at once: vocals, drums; bass.")
    return
  end
  if settings.server == "" then
    message("Enter the samaudio server's address as host:port, for example 127.0.0.1:50051.")
    return
  end
  if settings.program == "" then settings.program = DEFAULTS.program end
  if settings.quality == "" then settings.quality = DEFAULTS.quality end
  if not QUALITY_ARGS[settings.quality] then
    message("Quality is fast or best (best: 4 candidates and predicted spans, about 4x the time; the server "
      .. "needs a text ranker and a span predictor).")
    return
  end
  save_settings(settings)
  local job
  job, why = M.resolve_selection(settings.span_mode == "y")
  if not job then
    message(why)
    return
  end
  M.start(job, settings)
end

-- Tests load this file as a library (SAMAUDIO_LIBRARY = true); REAPER runs it as an action.
if not SAMAUDIO_LIBRARY then M.main() end
return M
