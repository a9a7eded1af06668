// Parses each Adaptive Card given on stdin (a JSON array of cards) with the Adaptive Cards JavaScript library, as
// a Teams client would, and prints a JSON array with, per card, every parse and validation message it reported
// (an empty list: the card is valid). Usage: node validate.js PATH/TO/node_modules < cards.json
const path = require("path");
const AC = require(path.join(process.argv[2], "adaptivecards", "dist", "adaptivecards.js"));

const input = require("fs").readFileSync(0, "utf8");
const results = JSON.parse(input).map((json) => {
  const context = new AC.SerializationContext();
  context.targetVersion = AC.Versions.v1_5;
  const card = new AC.AdaptiveCard();
  card.parse(json, context);
  const messages = [];
  for (let i = 0; i < context.eventCount; i++) messages.push(context.getEventAt(i).message);
  for (const event of card.validateProperties().validationEvents) messages.push(event.message);
  return messages;
});
process.stdout.write(JSON.stringify(results));
