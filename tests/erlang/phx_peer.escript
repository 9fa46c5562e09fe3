#!/usr/bin/env escript
%% -*- erlang -*-
%%! -noshell
%% The Phoenix side of tests/test_phoenix_wire.py, in plain Erlang/OTP (erlang-base):
%% it does on a real redis-server what phoenix_pubsub_redis 3.x does, byte for byte,
%% with the runtime's own term_to_binary/binary_to_term.
%%
%%   publish PORT CHANNEL TERMFILE LEVEL
%%       PUBLISH term_to_binary(T, [{compressed, LEVEL}]), T the value of the
%%       expression in TERMFILE.
%%   listen PORT CHANNEL NODE EXPECTFILE
%%       SUBSCRIBE; print "subscribed"; then for each term of EXPECTFILE, in order,
%%       read one message, binary_to_term it and check that it is exactly that term
%%       and that a phoenix_pubsub_redis 3.x node named NODE would take it (its
%%       handle_info guard) and that Phoenix.Channel.Server could fastlane it.
%%       Messages of another event than the next wanted one are skipped (the chat
%%       also broadcasts user:entered, presence); prints "match" per wanted message
%%       and exits 1 at the first difference.
%%   decode FILE
%%       print binary_to_term of the file's bytes (~p).

main(["publish", Port, Channel, TermFile, Level]) ->
    {ok, Source} = file:read_file(TermFile),  % an expression: self() may appear in it
    {ok, Tokens, _} = erl_scan:string(unicode:characters_to_list(Source)),
    {ok, Exprs} = erl_parse:parse_exprs(Tokens),
    {value, Term, _} = erl_eval:exprs(Exprs, []),
    Bin = term_to_binary(Term, [{compressed, list_to_integer(Level)}]),
    S = connect(Port),
    ok = gen_tcp:send(S, command([<<"PUBLISH">>, list_to_binary(Channel), Bin])),
    {Count, _} = reply(S, <<>>),
    io:format("published ~p~n", [Count]);
main(["listen", Port, Channel, Node, ExpectFile]) ->
    {ok, Expected} = file:consult(ExpectFile),
    S = connect(Port),
    ok = gen_tcp:send(S, command([<<"SUBSCRIBE">>, list_to_binary(Channel)])),
    {[<<"subscribe">>, _, 1], Rest} = reply(S, <<>>),
    io:format("subscribed~n"),
    listen(S, Rest, list_to_binary(Node), Expected);
main(["decode", File]) ->
    {ok, Bin} = file:read_file(File),
    io:format("~p~n", [binary_to_term(Bin)]).

listen(_S, _Buf, _Node, []) ->
    io:format("done~n");
listen(S, Buf, Node, [Want | More]) ->
    {[<<"message">>, _Channel, Payload], Rest} = reply(S, Buf),
    Got = binary_to_term(Payload),
    io:format("got ~p~n", [Got]),
    case event(Got) =:= event(Want) of
        true -> check(S, Rest, Node, Want, More, Got);
        false -> io:format("skip~n"), listen(S, Rest, Node, [Want | More])
    end.

event({_, _, _, _, #{event := Event}, _}) -> Event;
event(_) -> none.

check(S, Rest, Node, Want, More, Got) ->
    case {Got =:= Want, accepts(Got, Node), fastlane(Got)} of
        {true, true, true} ->
            io:format("match~n"),
            listen(S, Rest, Node, More);
        Other ->
            io:format("MISMATCH ~p~nwanted ~w~n", [Other, Want]),
            halt(1)
    end.

%% phoenix_pubsub_redis 3.x, Phoenix.PubSub.RedisServer.handle_info/2: the one clause
%% that delivers (anything else is ignored).
accepts({3, Mode, Target, Topic, _Message, Dispatcher}, NodeName)
  when is_binary(Topic), is_atom(Dispatcher),
       ((Mode =:= only andalso Target =:= NodeName) orelse
        (Mode =:= except andalso Target =/= NodeName)) ->
    true;
accepts(_, _) ->
    false.

%% Phoenix.Channel.Server.dispatch/3 and the V1/V2 serializers' fastlane!/1: a
%% %Phoenix.Socket.Broadcast{} with binary topic and event, a map or {binary, Data}.
fastlane({3, _, _, Topic, Msg, 'Elixir.Phoenix.Channel.Server'}) ->
    case Msg of
        #{'__struct__' := 'Elixir.Phoenix.Socket.Broadcast', topic := Topic,
          event := Event, payload := Payload} = M when is_binary(Event), map_size(M) =:= 4 ->
            is_map(Payload) orelse (tuple_size(Payload) =:= 2 andalso
                                    element(1, Payload) =:= binary andalso
                                    is_binary(element(2, Payload)));
        _ -> false
    end;
fastlane(_) ->
    false.

connect(Port) ->
    {ok, S} = gen_tcp:connect({127, 0, 0, 1}, list_to_integer(Port),
                              [binary, {active, false}, {packet, raw}], 5000),
    S.

command(Args) ->
    [<<"*">>, integer_to_binary(length(Args)), <<"\r\n">>,
     [[<<"$">>, integer_to_binary(byte_size(A)), <<"\r\n">>, A, <<"\r\n">>] || A <- Args]].

more(S, Buf) ->
    {ok, Data} = gen_tcp:recv(S, 0, 20000),
    <<Buf/binary, Data/binary>>.

line(S, Buf) ->
    case binary:split(Buf, <<"\r\n">>) of
        [Line, Rest] -> {Line, Rest};
        [_] -> line(S, more(S, Buf))
    end.

need(S, Buf, N) when byte_size(Buf) < N -> need(S, more(S, Buf), N);
need(_S, Buf, _N) -> Buf.

reply(S, Buf) ->
    case line(S, Buf) of
        {<<"*", N/binary>>, Rest} -> items(S, Rest, binary_to_integer(N), []);
        {<<"$", N/binary>>, Rest} ->
            Len = binary_to_integer(N),
            <<Value:Len/binary, "\r\n", After/binary>> = need(S, Rest, Len + 2),
            {Value, After};
        {<<":", N/binary>>, Rest} -> {binary_to_integer(N), Rest};
        {<<"+", Text/binary>>, Rest} -> {Text, Rest};
        {<<"-", Error/binary>>, _} -> io:format("redis error ~s~n", [Error]), halt(2)
    end.

items(_S, Rest, 0, Acc) -> {lists:reverse(Acc), Rest};
items(S, Rest, N, Acc) ->
    {Value, After} = reply(S, Rest),
    items(S, After, N - 1, [Value | Acc]).
