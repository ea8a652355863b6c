/// A value someone gave, for an error message: at most 80 characters, so a hostile or mistaken
/// megabyte-long argument, URL or form field does not flood a terminal, a log or a page.
public func shown(_ value: String) -> String {
    value.count <= 80 ? value : String(value.prefix(80)) + "… (\(value.utf8.count) bytes)"
}
